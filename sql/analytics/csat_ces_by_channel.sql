-- CSAT (% of 4-5 on 1-5) and CES (mean effort on 1-7) by the channel the answer came through.
SELECT coalesce(channel, 'unknown') AS channel,
       count(*) FILTER (WHERE survey = 'csat') AS csat_responses,
       csat(score) FILTER (WHERE survey = 'csat') AS csat,
       count(*) FILTER (WHERE survey = 'ces') AS ces_responses,
       ces(score) FILTER (WHERE survey = 'ces') AS ces
FROM raw.survey_responses
WHERE survey IN ('csat', 'ces')
GROUP BY 1
