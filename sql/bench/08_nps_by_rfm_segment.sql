-- Shipped view analytics.nps_by_segment: survey answers resolved to profiles (three left joins to cdp.identity_links on normalised ids) joined to their RFM segment, nps/nps_moe per segment.
SELECT * FROM analytics.nps_by_segment ORDER BY segment
