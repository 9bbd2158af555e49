-- Shipped view analytics.rfm (cdp.profiles, three ntile windows over every buyer, rfm_segment): profiles and average monetary value per RFM segment.
SELECT
    segment,
    count(*) AS profiles,
    avg(monetary) AS avg_monetary
FROM analytics.rfm
GROUP BY segment
ORDER BY segment
