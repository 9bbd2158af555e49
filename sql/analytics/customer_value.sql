-- Customer value and order cadence per profile with orders: historical
-- value (net revenue), tenure, the average number of days between net
-- orders, and a simple annualised value (net revenue per year of tenure,
-- tenure counted as at least 30 days).
SELECT profile_id, orders, net_orders, net_revenue, avg_order_value,
       first_order_at, last_net_order_at,
       tenure_days,
       CASE WHEN net_orders > 1
            THEN (to_unixtime(last_net_order_at) - to_unixtime(first_order_at)) / 86400.0 / (net_orders - 1)
       END AS avg_days_between_orders,
       CAST(net_revenue AS DOUBLE) / greatest(tenure_days, 30.0) * 365.0 AS annual_value
FROM (
    SELECT *, (to_unixtime(now()) - to_unixtime(first_order_at)) / 86400.0 AS tenure_days
    FROM cdp.profiles
    WHERE orders > 0
) customers
