-- Every survey answer with the profile that gave it: through its customer
-- id, else its email, else its cookie (normalised as the identity rules do).
SELECT s.response_id, s.survey, s.score, s.comment, s.channel, s.responded_at,
       coalesce(c.profile_id, e.profile_id, a.profile_id) AS profile_id
FROM raw.survey_responses s
LEFT JOIN cdp.identity_links c
       ON c.id_type = 'customer_id' AND c.id_value = normalize_id(s.customer_id)
LEFT JOIN cdp.identity_links e
       ON e.id_type = 'email' AND e.id_value = normalize_email(s.email)
LEFT JOIN cdp.identity_links a
       ON a.id_type = 'anonymous_id' AND a.id_value = normalize_lower(s.anonymous_id)
