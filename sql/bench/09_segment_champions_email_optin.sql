-- Segment: RFM Champions who granted email marketing (analytics.rfm joined to cdp.profiles on profile_id), count and their net revenue.
SELECT
    count(*) AS profiles,
    sum(r.monetary) AS net_revenue
FROM analytics.rfm r
JOIN cdp.profiles p ON p.profile_id = r.profile_id
WHERE r.segment = 'Champions'
  AND p.consent_email_marketing = 'granted'
