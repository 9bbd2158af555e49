-- Full scan of raw.events: count of events by type per UTC day (timestamp decode + cast + 2-key group by).
SELECT
    CAST("timestamp" AS date) AS event_day,
    type,
    count(*) AS events
FROM raw.events
GROUP BY CAST("timestamp" AS date), type
ORDER BY event_day, type
