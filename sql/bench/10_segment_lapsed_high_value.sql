-- Segment: lapsed high-value customers (cdp.profiles, net revenue of 2,000 or more and no net order since 2026-01-01 UTC), top 100 by net revenue.
SELECT
    profile_id,
    loyalty_tier,
    preferred_channel,
    net_orders,
    net_revenue,
    last_net_order_at
FROM cdp.profiles
WHERE net_revenue >= 2000
  AND last_net_order_at < TIMESTAMP '2026-01-01 00:00:00'
ORDER BY net_revenue DESC, profile_id
LIMIT 100
