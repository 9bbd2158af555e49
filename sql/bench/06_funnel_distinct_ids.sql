-- Partition pruning + count distinct: track events of Q2 2026 (Hive "date" filter), with distinct visitors and users per event name.
SELECT
    event,
    count(*) AS events,
    count(DISTINCT anonymous_id) AS visitors,
    count(DISTINCT user_id) AS users
FROM raw.events
WHERE type = 'track'
  AND "date" BETWEEN DATE '2026-04-01' AND DATE '2026-06-30'
GROUP BY event
ORDER BY visitors DESC, event
