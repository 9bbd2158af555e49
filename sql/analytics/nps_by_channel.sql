-- NPS by the channel the answer came through.
SELECT coalesce(channel, 'unknown') AS channel,
       count(*) AS responses,
       nps(score) AS nps,
       nps_moe(score) AS nps_moe
FROM raw.survey_responses
WHERE survey = 'nps'
GROUP BY 1
