-- Size of each saved segment by day (the last snapshot of each day).
SELECT segment, day, members
FROM (
    SELECT segment, date_trunc('day', snapshot_at) AS day, snapshot_at, count(*) AS members,
           row_number() OVER (PARTITION BY segment, date_trunc('day', snapshot_at) ORDER BY snapshot_at DESC) AS last
    FROM analytics.segment_membership
    GROUP BY segment, snapshot_at
) s
WHERE last = 1
