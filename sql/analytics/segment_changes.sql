-- Who entered or left each saved segment between its last two snapshots
-- (analytics.segment_membership, written by the segment_snapshots job).
WITH snapshots AS (
    SELECT segment, snapshot_at,
           dense_rank() OVER (PARTITION BY segment ORDER BY snapshot_at DESC) AS age
    FROM (SELECT DISTINCT segment, snapshot_at FROM analytics.segment_membership) s
),
latest AS (
    SELECT m.segment, m.profile_id, m.snapshot_at
    FROM analytics.segment_membership m
    JOIN snapshots s ON s.segment = m.segment AND s.snapshot_at = m.snapshot_at AND s.age = 1
),
previous AS (
    SELECT m.segment, m.profile_id, m.snapshot_at
    FROM analytics.segment_membership m
    JOIN snapshots s ON s.segment = m.segment AND s.snapshot_at = m.snapshot_at AND s.age = 2
),
bounds AS (
    SELECT segment,
           max(snapshot_at) FILTER (WHERE age = 2) AS previous_snapshot,
           max(snapshot_at) FILTER (WHERE age = 1) AS latest_snapshot
    FROM snapshots
    GROUP BY segment
)
SELECT b.segment,
       coalesce(l.profile_id, p.profile_id) AS profile_id,
       CASE WHEN p.profile_id IS NULL THEN 'entered' ELSE 'left' END AS change,
       b.previous_snapshot,
       b.latest_snapshot
FROM latest l
FULL OUTER JOIN previous p ON l.segment = p.segment AND l.profile_id = p.profile_id
JOIN bounds b ON b.segment = coalesce(l.segment, p.segment)
WHERE l.profile_id IS NULL OR p.profile_id IS NULL
