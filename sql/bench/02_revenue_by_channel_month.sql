-- Scan + filter + decimal aggregation: order count, revenue and average basket by channel and month, excluding returned/cancelled orders.
SELECT
    channel,
    date_trunc('month', ordered_at) AS order_month,
    count(*) AS orders,
    sum(amount) AS revenue,
    avg(amount) AS avg_basket
FROM raw.orders
WHERE status NOT IN ('returned', 'cancelled')
GROUP BY channel, date_trunc('month', ordered_at)
ORDER BY channel, order_month
