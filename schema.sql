-- twoyes schema, version 8.
--
-- The one source of the schema: `python cli.py init` applies the numbered
-- upgrades in db.py up to PRAGMA user_version, then runs this file on every
-- call: each table, index and trigger is IF NOT EXISTS, so it is safe to
-- repeat, and each view is dropped and made again, so a changed one reaches
-- every database.
--
-- Every instant is UTC text in ISO 8601 with seconds and offset
-- ("2026-11-27T09:00:00+00:00"), so text order is time order.

-- A coach's booking_url is where clients pick a time for the next session (Cal.com,
-- Calendly, ...): https only, and only when the coach gave one.
-- A forgotten coach (privacy.py) keeps their row as 'Forgotten coach'
-- <forgotten-coach-<id>@invalid>, like a forgotten client below.
CREATE TABLE IF NOT EXISTS coaches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    lang TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'nl')),
    created_at TEXT NOT NULL,
    -- The name mails greet them with; people.py fills in the first word of the name.
    call_name TEXT CHECK (length(call_name) BETWEEN 1 AND 100),
    forgotten_at TEXT,
    booking_url TEXT CHECK (booking_url LIKE 'https://%' AND length(booking_url) <= 2000)
);

-- A forgotten client (on request, or at the end of retention) keeps their row,
-- so counts stay true, as 'Forgotten client' <forgotten-<id>@invalid>: an
-- address that is unique and that no new client can be given (privacy.py).
CREATE TABLE IF NOT EXISTS clients (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    lang TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'nl')),
    created_at TEXT NOT NULL,
    forgotten_at TEXT,
    call_name TEXT CHECK (length(call_name) BETWEEN 1 AND 100)
);

CREATE TABLE IF NOT EXISTS engagements (
    id INTEGER PRIMARY KEY,
    coach_id INTEGER NOT NULL REFERENCES coaches (id),
    title TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('individual', 'group')),
    min_members INTEGER NOT NULL DEFAULT 1 CHECK (min_members >= 1),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    end_reason TEXT CHECK (end_reason IN
        ('client_stopped', 'coach_stopped', 'members_left', 'undecided', 'idle')),
    started_at TEXT NOT NULL,
    reopened_at TEXT,
    ended_at TEXT,
    -- An ended engagement has exactly one end reason; an active one none.
    CHECK ((status = 'ended') = (end_reason IS NOT NULL AND ended_at IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY,
    engagement_id INTEGER NOT NULL REFERENCES engagements (id),
    client_id INTEGER NOT NULL REFERENCES clients (id),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'left')),
    joined_at TEXT NOT NULL,
    left_at TEXT,
    UNIQUE (engagement_id, client_id)
);

-- A session is planned (start and length known, not yet held) or held.
-- A planned session is in people's calendars as `uid` (random: a row id may come back after
-- a cancellation), at version `sequence`, raised on every move (invitations.py).
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    engagement_id INTEGER NOT NULL REFERENCES engagements (id),
    status TEXT NOT NULL CHECK (status IN ('planned', 'held')),
    starts_at TEXT NOT NULL,
    minutes INTEGER NOT NULL CHECK (minutes BETWEEN 1 AND 1440),
    ends_at TEXT NOT NULL,
    held_at TEXT,
    created_at TEXT NOT NULL,
    uid TEXT,
    sequence INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX IF NOT EXISTS sessions_uid ON sessions (uid);

-- R7: at most one planned session per engagement.
CREATE UNIQUE INDEX IF NOT EXISTS sessions_one_planned
    ON sessions (engagement_id) WHERE status = 'planned';
CREATE INDEX IF NOT EXISTS sessions_planned_due
    ON sessions (ends_at) WHERE status = 'planned';

CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    -- R7: one round per session.
    session_id INTEGER NOT NULL UNIQUE REFERENCES sessions (id),
    engagement_id INTEGER NOT NULL REFERENCES engagements (id),
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at TEXT NOT NULL,
    deadline_at TEXT NOT NULL,
    reminder_at TEXT NOT NULL,
    closed_at TEXT,
    outcome TEXT CHECK (outcome IN ('continue', 'stop')),
    -- A closed round has exactly one outcome; an open one none.
    CHECK ((status = 'closed') = (outcome IS NOT NULL AND closed_at IS NOT NULL))
);

-- R7: an engagement has at most one open round.
CREATE UNIQUE INDEX IF NOT EXISTS rounds_one_open
    ON rounds (engagement_id) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS rounds_open_deadline
    ON rounds (deadline_at) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS rounds_open_reminder
    ON rounds (reminder_at) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS rounds_engagement ON rounds (engagement_id);

-- One row per party of a round, written when the round opens, so a round
-- has any number of parties: the coach (client_id NULL) and each member.
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds (id),
    role TEXT NOT NULL CHECK (role IN ('coach', 'client')),
    client_id INTEGER REFERENCES clients (id),
    choice TEXT CHECK (choice IN ('continue', 'stop')),
    reason TEXT CHECK (reason IN ('on_my_own', 'not_useful', 'cannot_help', 'values', 'other')),
    usefulness INTEGER CHECK (usefulness BETWEEN 0 AND 10),
    note TEXT CHECK (length(note) <= 2000),
    decided_at TEXT,
    reminded_at TEXT,
    CHECK ((role = 'coach') = (client_id IS NULL)),
    CHECK ((choice IS NULL) = (decided_at IS NULL)),
    UNIQUE (round_id, client_id)
);

CREATE UNIQUE INDEX IF NOT EXISTS decisions_one_coach
    ON decisions (round_id) WHERE role = 'coach';

-- Only the SHA-256 of a token is kept, never the token. A decision token acts
-- for one party (decision) in one round; a welcome-back token for one client
-- of one engagement (member); a coach-view token opens one coach's overview
-- for a day (coach). `nonce` is a row's random, non-secret id; a mailed link's
-- token is HMAC(SECRET_KEY, nonce), made and hashed when its mail is delivered
-- (tokens.py): until then, and after its mail failed for good, `hash` is NULL
-- and the link opens nothing. (db.TOKENS_V6 repeats this shape: change both together.)
CREATE TABLE IF NOT EXISTS tokens (
    nonce TEXT PRIMARY KEY,
    hash TEXT UNIQUE,
    purpose TEXT NOT NULL CHECK (purpose IN ('decide', 'welcome_back', 'coach_view')),
    decision_id INTEGER REFERENCES decisions (id),
    member_id INTEGER REFERENCES members (id),
    coach_id INTEGER REFERENCES coaches (id),
    created_at TEXT NOT NULL,
    expires_at TEXT,
    CHECK ((purpose = 'decide') = (decision_id IS NOT NULL)),
    CHECK ((purpose = 'welcome_back') = (member_id IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK ((purpose = 'coach_view') = (coach_id IS NOT NULL AND expires_at IS NOT NULL))
) WITHOUT ROWID;

-- A coach's expired overview links are cleared out whenever a new one is made for them
-- (tokens.py): a look at that coach's overview links only, however many tokens there are.
CREATE INDEX IF NOT EXISTS tokens_coach_view
    ON tokens (coach_id, expires_at) WHERE purpose = 'coach_view';

-- Mail written by the system, waiting for delivery. `context` holds what the
-- templates need, its links as the nonces of their tokens rows until delivery;
-- then those are wiped too.
-- (db.UPGRADES[8] repeats this shape: change both together.)
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL
        CHECK (kind IN ('decision', 'reminder', 'outcome', 'welcome_back', 'sign_in',
                        'welcome', 'invitation',
                        'reply_recorded', 'reply_unclear', 'reply_refused', 'reply_forward')),
    engagement_id INTEGER REFERENCES engagements (id),
    to_name TEXT NOT NULL,
    to_email TEXT NOT NULL,
    reply_to_name TEXT,
    reply_to_email TEXT,
    lang TEXT NOT NULL DEFAULT 'en',
    context TEXT NOT NULL DEFAULT '{}',
    message_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_at TEXT,
    claim TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
);

CREATE INDEX IF NOT EXISTS outbox_due
    ON outbox (next_attempt_at) WHERE status IN ('queued', 'sending');

-- A reply to a decision or reminder mail names that mail's Message-ID, 128 random bits as
-- hard to guess as a link: only its SHA-256 is kept, with the party it was written to
-- (replies.py). No foreign key: a removed member's decision goes, and a reply to its mail
-- then belongs to nobody.
CREATE TABLE IF NOT EXISTS reply_threads (
    hash TEXT PRIMARY KEY,
    decision_id INTEGER NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

-- Every message read from the inbound mailbox, by the SHA-256 of its own Message-ID (of its
-- bytes when it has none), written in the transaction that handled it: a message read
-- again (a crash before it was moved, the same mail delivered twice) has no second effect.
CREATE TABLE IF NOT EXISTS inbound_messages (
    hash TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decision_id INTEGER
) WITHOUT ROWID;

-- The append-only log of every state change. Its detail holds ids, never a
-- name or an address; only a web decision's `ip` and `user_agent` are about a
-- person, and they are the one thing that may be taken out again (privacy.py).
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    engagement_id INTEGER,
    round_id INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS events_engagement ON events (engagement_id);

-- An update may only remove `ip` and `user_agent` from the detail (written as
-- `detail = json_remove(detail, '$.ip', '$.user_agent')`); nothing else changes.
CREATE TRIGGER IF NOT EXISTS events_update_only_erases BEFORE UPDATE ON events
WHEN NEW.id IS NOT OLD.id OR NEW.at IS NOT OLD.at OR NEW.kind IS NOT OLD.kind
    OR NEW.engagement_id IS NOT OLD.engagement_id OR NEW.round_id IS NOT OLD.round_id
    OR NEW.detail IS NOT json_remove(OLD.detail, '$.ip', '$.user_agent')
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only; only an ip and user agent can be erased');
END;

CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only');
END;

-- Views: joins the code would otherwise write out again and again. They hold
-- no data; `init` drops and makes each one again, so they stay last, after
-- everything they read. tests/test_schema.py checks that the queries over them
-- still reach their rows through the indexes above.

-- Every party of a round (one row per decision: the coach, and each member
-- asked) with what mails, pages and reports say about them: the round, its
-- session, the engagement and its coach, and for a client their name and
-- membership. `name`, `email` and `lang` are the party's own, coach or client.
-- Filter on `id` or `round_id` (`round_id IN (SELECT ...)` for many rounds):
-- then SQLite starts from decisions' index, never from a scan of rounds.
DROP VIEW IF EXISTS round_parties;
CREATE VIEW round_parties AS
SELECT decisions.id, decisions.round_id, decisions.role, decisions.client_id,
       decisions.choice, decisions.reason, decisions.usefulness, decisions.note,
       decisions.decided_at, decisions.reminded_at,
       rounds.engagement_id, rounds.session_id, rounds.status AS round_status,
       rounds.opened_at, rounds.deadline_at, rounds.reminder_at, rounds.closed_at,
       rounds.outcome, sessions.starts_at AS session_at,
       engagements.coach_id, engagements.title, engagements.kind, engagements.min_members,
       engagements.status AS engagement_status, engagements.end_reason,
       coaches.name AS coach_name, coaches.email AS coach_email, coaches.lang AS coach_lang,
       clients.name AS client_name, clients.email AS client_email,
       coalesce(clients.name, coaches.name) AS name,
       CASE WHEN decisions.client_id IS NULL THEN coaches.call_name
            ELSE clients.call_name END AS call_name,
       coalesce(clients.email, coaches.email) AS email,
       coalesce(clients.lang, coaches.lang) AS lang,
       members.id AS member_id, members.status AS member_status
FROM decisions
JOIN rounds ON rounds.id = decisions.round_id
JOIN sessions ON sessions.id = rounds.session_id
JOIN engagements ON engagements.id = rounds.engagement_id
JOIN coaches ON coaches.id = engagements.coach_id
LEFT JOIN clients ON clients.id = decisions.client_id
LEFT JOIN members ON members.engagement_id = rounds.engagement_id
                 AND members.client_id = decisions.client_id;

-- R6: the active engagements with nothing open or planned, and when each last
-- saw something happen (its start, its reopening or its last closed round).
-- The idle rule ends those whose last activity is IDLE_DAYS ago; `status`
-- shows those drifting towards it.
DROP VIEW IF EXISTS resting_engagements;
CREATE VIEW resting_engagements AS
SELECT engagements.*,
       max(engagements.started_at, coalesce(engagements.reopened_at, ''),
           coalesce((SELECT max(rounds.closed_at) FROM rounds
                      WHERE rounds.engagement_id = engagements.id), '')) AS last_activity
FROM engagements
WHERE engagements.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM rounds WHERE rounds.engagement_id = engagements.id
                    AND rounds.status = 'open')
  AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.engagement_id = engagements.id
                    AND sessions.status = 'planned');
