-- NPS by RFM segment of the answering profile ('No orders' for profiles
-- without a net order, 'Unknown' for answers no profile could be found for).
SELECT CASE WHEN a.profile_id IS NULL THEN 'Unknown'
            ELSE coalesce(r.segment, 'No orders') END AS segment,
       count(*) AS responses,
       nps(a.score) AS nps,
       nps_moe(a.score) AS nps_moe
FROM analytics.survey_answers a
LEFT JOIN analytics.rfm r ON r.profile_id = a.profile_id
WHERE a.survey = 'nps'
GROUP BY 1
