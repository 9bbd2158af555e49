-- NPS by month of answer, with the number of answers and the 95 % margin of error.
SELECT date_trunc('month', responded_at) AS month,
       count(*) AS responses,
       nps(score) AS nps,
       nps_moe(score) AS nps_moe
FROM raw.survey_responses
WHERE survey = 'nps'
GROUP BY 1
