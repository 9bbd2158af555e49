-- The schemas, tables and views Panorama serves, as PostgreSQL DDL.
--
-- Loaded into a real PostgreSQL, this gives the golden catalog that client
-- tests (python_clients.py --golden, odbc_catalog.py --golden) compare
-- Panorama's against: same schemas, relation names and kinds, column names
-- and order, PostgreSQL types (Arrow Utf8 = text, Int64 = bigint,
-- Float64 = double precision, Boolean = boolean, Date32 = date,
-- Timestamp(us, UTC) = timestamp with time zone, List(Utf8) = text[],
-- Decimal128(p, s) = numeric(p,s)) and NOT NULL on base tables.
--
-- analytics.* are views in Panorama (except segment_membership); here each is
-- a view of typed NULLs with the same columns. PostgreSQL never marks a
-- view's column NOT NULL.
--
-- Keep in step with src/ when a table or view changes.

CREATE SCHEMA raw;

CREATE TABLE raw.consents (
    consent_id   text NOT NULL,
    customer_id  text,
    email        text,
    anonymous_id text,
    purpose      text NOT NULL,
    status       text NOT NULL,
    recorded_at  timestamp with time zone NOT NULL,
    source       text NOT NULL,
    extra        text,
    date         date NOT NULL
);

CREATE TABLE raw.customers (
    customer_id  text NOT NULL,
    email        text,
    phone        text,
    first_name   text,
    last_name    text,
    street       text,
    city         text,
    postal_code  text,
    country      text,
    birth_date   date,
    loyalty_tier text,
    newsletter   boolean,
    source       text NOT NULL,
    created_at   timestamp with time zone,
    updated_at   timestamp with time zone NOT NULL,
    extra        text,
    date         date NOT NULL
);

CREATE TABLE raw.events (
    message_id   text NOT NULL,
    type         text NOT NULL,
    event        text,
    name         text,
    anonymous_id text,
    user_id      text,
    previous_id  text,
    group_id     text,
    email        text,
    timestamp    timestamp with time zone NOT NULL,
    received_at  timestamp with time zone NOT NULL,
    properties   text,
    traits       text,
    context      text,
    extra        text,
    date         date NOT NULL
);

CREATE TABLE raw.order_items (
    order_id   text NOT NULL,
    line       bigint NOT NULL,
    product_id text NOT NULL,
    quantity   bigint NOT NULL,
    unit_price numeric(12,2) NOT NULL,
    ordered_at timestamp with time zone NOT NULL,
    extra      text,
    date       date NOT NULL
);

CREATE TABLE raw.orders (
    order_id     text NOT NULL,
    customer_id  text,
    email        text,
    anonymous_id text,
    ordered_at   timestamp with time zone NOT NULL,
    amount       numeric(12,2) NOT NULL,
    currency     text NOT NULL,
    status       text NOT NULL,
    channel      text NOT NULL,
    item_count   bigint NOT NULL,
    extra        text,
    date         date NOT NULL
);

CREATE TABLE raw.products (
    product_id text NOT NULL,
    name       text NOT NULL,
    category   text NOT NULL,
    price      numeric(12,2) NOT NULL,
    stock      bigint NOT NULL,
    season     text,
    active     boolean NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    extra      text,
    date       date NOT NULL
);

CREATE TABLE raw.survey_responses (
    response_id  text NOT NULL,
    customer_id  text,
    email        text,
    anonymous_id text,
    survey       text NOT NULL,
    score        bigint NOT NULL,
    comment      text,
    channel      text,
    responded_at timestamp with time zone NOT NULL,
    extra        text,
    date         date NOT NULL
);

CREATE SCHEMA cdp;

CREATE TABLE cdp.identity_links (
    id_type    text,
    id_value   text,
    profile_id text,
    first_seen timestamp with time zone,
    last_seen  timestamp with time zone
);

CREATE TABLE cdp.identity_rejections (
    kind         text,
    id_type      text,
    id_value     text,
    other_type   text,
    other_value  text,
    detail       text,
    refreshed_at timestamp with time zone
);

CREATE TABLE cdp.profile_merges (
    kind            text,
    from_profile_id text,
    to_profile_id   text,
    cause_type      text,
    cause_value     text,
    refreshed_at    timestamp with time zone
);

CREATE TABLE cdp.profiles (
    profile_id              text NOT NULL,
    customer_ids            text[],
    user_ids                text[],
    emails                  text[],
    phones                  text[],
    anonymous_ids           text[],
    first_name              text,
    last_name               text,
    street                  text,
    city                    text,
    postal_code             text,
    country                 text,
    birth_date              date,
    loyalty_tier            text,
    newsletter              boolean,
    first_seen              timestamp with time zone,
    last_seen               timestamp with time zone,
    events                  bigint,
    page_views              bigint,
    tracks                  bigint,
    identifies              bigint,
    orders                  bigint,
    net_orders              bigint,
    gross_revenue           numeric(18,2),
    net_revenue             numeric(18,2),
    avg_order_value         numeric(18,2),
    first_order_at          timestamp with time zone,
    last_order_at           timestamp with time zone,
    last_net_order_at       timestamp with time zone,
    preferred_channel       text,
    last_nps                bigint,
    last_nps_at             timestamp with time zone,
    last_csat               bigint,
    last_csat_at            timestamp with time zone,
    last_ces                bigint,
    last_ces_at             timestamp with time zone,
    consent_email_marketing text,
    consent_sms_marketing   text,
    consent_ads             text,
    consent_analytics       text,
    consent_personalisation text,
    refreshed_at            timestamp with time zone
);

CREATE SCHEMA system;

CREATE TABLE system.identity_blocks (
    action      text,
    id_type     text,
    id_value    text,
    other_type  text,
    other_value text,
    reason      text,
    decided_at  timestamp with time zone
);

CREATE TABLE system.ingests (
    load_id       text NOT NULL,
    table_name    text NOT NULL,
    source        text NOT NULL,
    content_hash  text NOT NULL,
    status        text NOT NULL,
    rows_read     bigint NOT NULL,
    rows_landed   bigint NOT NULL,
    rows_rejected bigint NOT NULL,
    started_at    timestamp with time zone NOT NULL,
    finished_at   timestamp with time zone NOT NULL,
    fields_in_extra text,
    fields_dropped  text,
    rows_suppressed bigint
);

CREATE TABLE system.job_runs (
    job           text,
    scheduled_for timestamp with time zone,
    started_at    timestamp with time zone,
    finished_at   timestamp with time zone,
    status        text,
    rows_written  bigint,
    error         text,
    target        text,
    version       bigint,
    rows_left_out bigint
);

CREATE TABLE system.privacy_requests (
    request_id      text,
    kind            text,
    id_type         text,
    value_hash      text,
    status          text,
    requested_at    timestamp with time zone,
    due_at          timestamp with time zone,
    completed_at    timestamp with time zone,
    identifiers     bigint,
    profiles        bigint,
    rows_removed    bigint,
    files_rewritten bigint,
    tables          text,
    error           text
);

CREATE TABLE system.refreshes (
    refresh_id     text,
    started_at     timestamp with time zone,
    finished_at    timestamp with time zone,
    status         text,
    error          text,
    "full"         boolean,
    version        bigint,
    raw_files      bigint,
    raw_rows       bigint,
    identifiers    bigint,
    links          bigint,
    profiles       bigint,
    new_profiles   bigint,
    merges         bigint,
    splits         bigint,
    refused_links  bigint,
    blocked_values bigint,
    refused_values text
);

CREATE TABLE system.rejects (
    load_id     text NOT NULL,
    table_name  text NOT NULL,
    source      text NOT NULL,
    line        bigint NOT NULL,
    field       text,
    reason      text NOT NULL,
    raw         text,
    rejected_at timestamp with time zone NOT NULL
);

CREATE TABLE system.suppressions (
    request_id text,
    action     text,
    id_type    text,
    value_hash text,
    decided_at timestamp with time zone
);

CREATE TABLE system.table_history (
    table_name    text,
    version       bigint,
    committed_at  timestamp with time zone,
    operation     text,
    written_by    text,
    files_added   bigint,
    files_removed bigint,
    rows_added    bigint,
    data_change   boolean
);

CREATE SCHEMA analytics;

CREATE VIEW analytics.churn_risk AS SELECT
    NULL::text AS profile_id,
    NULL::bigint AS net_orders,
    NULL::timestamp with time zone AS last_net_order_at,
    NULL::double precision AS avg_days_between_orders,
    NULL::double precision AS days_since_last_order,
    NULL::double precision AS overdue_ratio,
    NULL::boolean AS at_risk;

CREATE VIEW analytics.csat_ces_by_channel AS SELECT
    NULL::text AS channel,
    NULL::bigint AS csat_responses,
    NULL::double precision AS csat,
    NULL::bigint AS ces_responses,
    NULL::double precision AS ces;

CREATE VIEW analytics.csat_ces_by_month AS SELECT
    NULL::timestamp with time zone AS month,
    NULL::bigint AS csat_responses,
    NULL::double precision AS csat,
    NULL::bigint AS ces_responses,
    NULL::double precision AS ces;

CREATE VIEW analytics.csat_ces_by_segment AS SELECT
    NULL::text AS segment,
    NULL::bigint AS csat_responses,
    NULL::double precision AS csat,
    NULL::bigint AS ces_responses,
    NULL::double precision AS ces;

CREATE VIEW analytics.customer_value AS SELECT
    NULL::text AS profile_id,
    NULL::bigint AS orders,
    NULL::bigint AS net_orders,
    NULL::numeric(18,2) AS net_revenue,
    NULL::numeric(18,2) AS avg_order_value,
    NULL::timestamp with time zone AS first_order_at,
    NULL::timestamp with time zone AS last_net_order_at,
    NULL::double precision AS tenure_days,
    NULL::double precision AS avg_days_between_orders,
    NULL::double precision AS annual_value;

CREATE VIEW analytics.detractors AS SELECT
    NULL::text AS profile_id,
    NULL::bigint AS score,
    NULL::text AS comment,
    NULL::text AS channel,
    NULL::timestamp with time zone AS responded_at;

CREATE VIEW analytics.nps_by_channel AS SELECT
    NULL::text AS channel,
    NULL::bigint AS responses,
    NULL::double precision AS nps,
    NULL::double precision AS nps_moe;

CREATE VIEW analytics.nps_by_month AS SELECT
    NULL::timestamp with time zone AS month,
    NULL::bigint AS responses,
    NULL::double precision AS nps,
    NULL::double precision AS nps_moe;

CREATE VIEW analytics.nps_by_segment AS SELECT
    NULL::text AS segment,
    NULL::bigint AS responses,
    NULL::double precision AS nps,
    NULL::double precision AS nps_moe;

CREATE VIEW analytics.rfm AS SELECT
    NULL::text AS profile_id,
    NULL::bigint AS recency_days,
    NULL::bigint AS frequency,
    NULL::numeric(18,2) AS monetary,
    NULL::bigint AS r,
    NULL::bigint AS f,
    NULL::bigint AS m,
    NULL::text AS segment;

CREATE VIEW analytics.segment_changes AS SELECT
    NULL::text AS segment,
    NULL::text AS profile_id,
    NULL::text AS change,
    NULL::timestamp with time zone AS previous_snapshot,
    NULL::timestamp with time zone AS latest_snapshot;

CREATE TABLE analytics.segment_membership (
    segment     text,
    profile_id  text,
    snapshot_at timestamp with time zone
);

CREATE VIEW analytics.segment_sizes AS SELECT
    NULL::text AS segment,
    NULL::timestamp with time zone AS day,
    NULL::bigint AS members;

CREATE VIEW analytics.survey_answers AS SELECT
    NULL::text AS response_id,
    NULL::text AS survey,
    NULL::bigint AS score,
    NULL::text AS comment,
    NULL::text AS channel,
    NULL::timestamp with time zone AS responded_at,
    NULL::text AS profile_id;
