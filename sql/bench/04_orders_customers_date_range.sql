-- Dedup + join + date-range filter: completed Q1 2026 orders joined to each customer's latest CRM row, aggregated by loyalty tier.
WITH latest_customer AS (
    SELECT customer_id, loyalty_tier
    FROM (
        SELECT
            customer_id,
            loyalty_tier,
            row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) AS export_rank
        FROM raw.customers
    ) exports
    WHERE export_rank = 1
)
SELECT
    lc.loyalty_tier,
    count(*) AS orders,
    count(DISTINCT o.customer_id) AS buyers,
    sum(o.amount) AS revenue
FROM raw.orders o
JOIN latest_customer lc ON o.customer_id = lc.customer_id
WHERE CAST(o.ordered_at AS date) BETWEEN DATE '2026-01-01' AND DATE '2026-03-31'
  AND o.status = 'completed'
GROUP BY lc.loyalty_tier
ORDER BY lc.loyalty_tier NULLS LAST
