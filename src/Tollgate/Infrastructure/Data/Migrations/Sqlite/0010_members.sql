-- People who manage accounts: users (email + password hash from ASP.NET Core's PasswordHasher), their memberships
-- with a role per account (owner, admin, member, viewer), and dashboard sessions (only a hash of the token is kept).
CREATE TABLE users (
    id             text   PRIMARY KEY,
    email          text   NOT NULL UNIQUE,
    password_hash  text   NOT NULL,
    created_at     bigint NOT NULL
);

CREATE TABLE memberships (
    account_id  text   NOT NULL REFERENCES accounts (id),
    user_id     text   NOT NULL REFERENCES users (id),
    role        text   NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  bigint NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE sessions (
    id          text   PRIMARY KEY,
    token_hash  blob  NOT NULL UNIQUE,
    user_id     text   NOT NULL REFERENCES users (id),
    account_id  text   NOT NULL REFERENCES accounts (id),
    created_at  bigint NOT NULL,
    expires_at  bigint NOT NULL,
    revoked_at  bigint
);
