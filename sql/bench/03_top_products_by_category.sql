-- Join + window functions: latest catalogue snapshot per product, revenue per product from order_items, top 5 products per category.
WITH catalogue AS (
    SELECT product_id, name, category
    FROM (
        SELECT
            product_id,
            name,
            category,
            row_number() OVER (PARTITION BY product_id ORDER BY updated_at DESC) AS snapshot_rank
        FROM raw.products
    ) snapshots
    WHERE snapshot_rank = 1
),
sales AS (
    SELECT
        c.category,
        c.product_id,
        c.name,
        sum(oi.quantity) AS units,
        sum(oi.quantity * oi.unit_price) AS revenue
    FROM raw.order_items oi
    JOIN catalogue c ON oi.product_id = c.product_id
    GROUP BY c.category, c.product_id, c.name
),
ranked AS (
    SELECT
        category,
        product_id,
        name,
        units,
        revenue,
        row_number() OVER (PARTITION BY category ORDER BY revenue DESC, product_id) AS category_rank
    FROM sales
)
SELECT category, category_rank, product_id, name, units, revenue
FROM ranked
WHERE category_rank <= 5
ORDER BY category, category_rank
