//! Messages without the values they were about. An error raised while
//! reading data (a cast that failed, a value out of range) often quotes the
//! value; when such a message is stored (`system.job_runs.error`,
//! `system.refreshes.error`) or logged, the value would outlive the data
//! and reach whoever reads the record. [`values`] keeps what the message
//! says and drops what it quotes.

/// `message` with every quoted literal (`'…'`) and every token that reads
/// like an email address or a phone number replaced by `…`.
pub fn values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('\'') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('\'') {
            Some(close) => {
                out.push_str("'…'");
                rest = &after[close + 1..];
            }
            None => {
                out.push_str("'…");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.split_inclusive(char::is_whitespace)
        .map(|word| {
            let token = word
                .trim_end()
                .trim_end_matches(|c: char| ",;:)]}".contains(c));
            let digits = token.chars().filter(char::is_ascii_digit).count();
            let email = token.contains('@') && token.contains('.');
            let phone = digits >= 9
                && token
                    .chars()
                    .all(|c| c.is_ascii_digit() || "+-.()/".contains(c));
            if email || phone {
                format!("…{}", &word[token.len()..])
            } else {
                word.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn quoted_values_emails_and_phones_are_dropped() {
        assert_eq!(
            values("Cast error: Cannot cast string 'jeanne@example.net' to value of Int64 type"),
            "Cast error: Cannot cast string '…' to value of Int64 type"
        );
        assert_eq!(
            values("no profile for jeanne@example.net or +33612345678, see line 4"),
            "no profile for … or …, see line 4"
        );
        assert_eq!(values("it's open"), "it'…");
        assert_eq!(values("plain message 42"), "plain message 42");
    }
}
