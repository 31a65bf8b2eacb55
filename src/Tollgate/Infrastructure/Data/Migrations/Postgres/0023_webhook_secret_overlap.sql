-- Rotating a webhook signing secret can keep the previous one signing until a deadline, so receivers switch without
-- losing deliveries: each delivery carries one v1 signature per live secret.
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_ciphertext text;
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret_expires_at bigint;
