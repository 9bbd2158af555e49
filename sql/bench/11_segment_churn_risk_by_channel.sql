-- Segment: churn-risk customers by preferred channel (analytics.churn_risk over analytics.customer_value, at_risk rows joined to cdp.profiles): count, net revenue and average overdue ratio.
SELECT
    coalesce(p.preferred_channel, 'unknown') AS preferred_channel,
    count(*) AS at_risk_customers,
    sum(p.net_revenue) AS net_revenue,
    avg(c.overdue_ratio) AS avg_overdue_ratio
FROM analytics.churn_risk c
JOIN cdp.profiles p ON p.profile_id = c.profile_id
WHERE c.at_risk
GROUP BY coalesce(p.preferred_channel, 'unknown')
ORDER BY preferred_channel
