-- Profiles whose latest NPS answer is a detractor (0-6), with that answer's
-- comment and channel: the follow-up list.
SELECT profile_id, score, comment, channel, responded_at
FROM (
    SELECT *, row_number() OVER (PARTITION BY profile_id ORDER BY responded_at DESC, response_id) AS latest
    FROM analytics.survey_answers
    WHERE survey = 'nps' AND profile_id IS NOT NULL
) answers
WHERE latest = 1 AND score <= 6
