-- RFM per profile with net orders: recency (whole days since the last net
-- order, as of now), frequency (net orders), monetary (net revenue), their
-- quintile scores 1-5 (5 = most recent / most frequent / highest; ties are
-- split by profile_id so every quintile has its share) and the segment
-- (rfm_segment, see README).
SELECT profile_id, recency_days, frequency, monetary, r, f, m, rfm_segment(r, f, m) AS segment
FROM (
    SELECT *,
           6 - CAST(ntile(5) OVER (ORDER BY recency_days, profile_id) AS BIGINT) AS r,
           CAST(ntile(5) OVER (ORDER BY frequency, profile_id) AS BIGINT) AS f,
           CAST(ntile(5) OVER (ORDER BY monetary, profile_id) AS BIGINT) AS m
    FROM (
        SELECT profile_id,
               CAST(floor((to_unixtime(now()) - to_unixtime(last_net_order_at)) / 86400) AS BIGINT) AS recency_days,
               net_orders AS frequency,
               net_revenue AS monetary
        FROM cdp.profiles
        WHERE net_orders > 0
    ) buyers
) scored
