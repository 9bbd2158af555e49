-- schedule: 0 2 * * *
-- target: rfm_scores
-- mode: replace
-- refresh: true
--
-- Nightly RFM scores of every buyer, after an incremental profile refresh,
-- as a table (analytics.rfm_scores) that BI dashboards read without
-- recomputing the quintiles.
SELECT *, now() AS scored_at FROM analytics.rfm
