-- CSAT and CES by RFM segment of the answering profile ('No orders' for
-- profiles without a net order, 'Unknown' when no profile was found).
SELECT CASE WHEN a.profile_id IS NULL THEN 'Unknown'
            ELSE coalesce(r.segment, 'No orders') END AS segment,
       count(*) FILTER (WHERE a.survey = 'csat') AS csat_responses,
       csat(a.score) FILTER (WHERE a.survey = 'csat') AS csat,
       count(*) FILTER (WHERE a.survey = 'ces') AS ces_responses,
       ces(a.score) FILTER (WHERE a.survey = 'ces') AS ces
FROM analytics.survey_answers a
LEFT JOIN analytics.rfm r ON r.profile_id = a.profile_id
WHERE a.survey IN ('csat', 'ces')
GROUP BY 1
