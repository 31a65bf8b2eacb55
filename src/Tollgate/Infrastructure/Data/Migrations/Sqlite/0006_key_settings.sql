-- Per-key restrictions: allowed models (JSON array of globs such as "openai/*"), expiry, rate limits (null = the
-- gateway's defaults) and free-form metadata (JSON object). Rotation links a new key to the one it replaced.
ALTER TABLE api_keys ADD COLUMN allowed_models text;
ALTER TABLE api_keys ADD COLUMN expires_at bigint;
ALTER TABLE api_keys ADD COLUMN requests_per_minute bigint;
ALTER TABLE api_keys ADD COLUMN tokens_per_minute bigint;
ALTER TABLE api_keys ADD COLUMN concurrent_requests bigint;
ALTER TABLE api_keys ADD COLUMN metadata text;
ALTER TABLE api_keys ADD COLUMN rotated_from text;
