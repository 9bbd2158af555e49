-- Churn risk: repeat customers (2+ net orders) whose time since their last
-- net order exceeds twice their usual interval between orders.
SELECT profile_id, net_orders, last_net_order_at, avg_days_between_orders,
       days_since_last_order,
       days_since_last_order / avg_days_between_orders AS overdue_ratio,
       days_since_last_order > 2 * avg_days_between_orders AS at_risk
FROM (
    SELECT *, (to_unixtime(now()) - to_unixtime(last_net_order_at)) / 86400.0 AS days_since_last_order
    FROM analytics.customer_value
    WHERE net_orders >= 2 AND avg_days_between_orders > 0
) repeaters
