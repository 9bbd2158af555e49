-- Conditional aggregation: NPS = 100 * (share of 9-10 minus share of 0-6) over survey 'nps', by channel and month.
SELECT
    channel,
    date_trunc('month', responded_at) AS response_month,
    count(*) AS responses,
    round(
        100.0 * (sum(CASE WHEN score >= 9 THEN 1 ELSE 0 END) - sum(CASE WHEN score <= 6 THEN 1 ELSE 0 END))
            / count(*),
        1
    ) AS nps
FROM raw.survey_responses
WHERE survey = 'nps'
GROUP BY channel, date_trunc('month', responded_at)
ORDER BY channel NULLS LAST, response_month
