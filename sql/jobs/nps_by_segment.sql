-- schedule: 30 2 * * *
-- target: nps_by_segment_daily
-- mode: append
--
-- NPS by RFM segment, one row per segment per day: the trend behind
-- analytics.nps_by_segment.
SELECT CAST(now() AS DATE) AS day, segment, responses, nps, nps_moe
FROM analytics.nps_by_segment
