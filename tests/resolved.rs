//! Row → profile: `resolved.<table>` is each raw table that feeds identity
//! with the `profile_id` its row belongs to — the same answer as a join
//! through `cdp.identity_links` on the normalised identifiers, for admins
//! and (with the personal columns masked) for analysts, for rows landed
//! since the last refresh as soon as their identifiers are known, and for
//! new identifiers once a refresh has linked them.

use std::collections::BTreeMap;

use crate::support::*;

/// `key → profile_id` of `sql`'s two text columns (NULL profile: `-`).
async fn profiles_of(client: &tokio_postgres::Client, sql: &str) -> BTreeMap<String, String> {
    simple_rows(client, sql)
        .await
        .into_iter()
        .map(|row| {
            (
                row[0].clone().expect("a key"),
                row[1].clone().unwrap_or_else(|| "-".into()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raw_row_carries_the_profile_its_identifiers_resolve_to() {
    let (_dir, lake) = temp_lake();
    land_and_refresh_fixture(&lake).await;
    let server = ada_and_ana(&lake).await;
    let ada = connect_as(&server, "ada", "admin-secret").await.unwrap();
    let ana = connect_as(&server, "ana", "analyst-secret").await.unwrap();

    // The reference: each identifier normalised by its own rule and joined
    // through the identity links, strongest type (customer_id) first.
    let reference = |table: &str, key: &str| {
        format!(
            "SELECT t.{key}, coalesce(c.profile_id, e.profile_id) FROM raw.{table} t \
             LEFT JOIN cdp.identity_links c ON c.id_type = 'customer_id' \
               AND c.id_value = normalize_id(t.customer_id) \
             LEFT JOIN cdp.identity_links e ON e.id_type = 'email' \
               AND e.id_value = normalize_email(t.email)"
        )
    };
    let orders = profiles_of(&ada, "SELECT order_id, profile_id FROM resolved.orders").await;
    assert_eq!(
        orders,
        profiles_of(&ada, &reference("orders", "order_id")).await
    );
    assert_eq!(orders.len(), 4);
    assert!(orders.values().all(|p| p != "-"), "{orders:?}");
    assert_eq!(orders["O1"], orders["O2"], "both of C1's orders");
    assert_ne!(orders["O1"], orders["O3"]);
    let customers = profiles_of(
        &ada,
        "SELECT customer_id, profile_id FROM resolved.customers",
    )
    .await;
    assert_eq!(
        customers,
        profiles_of(&ada, &reference("customers", "customer_id")).await
    );
    // ' Jane.Doe@Example.com' was normalised before the lookup.
    assert_eq!(customers["C1"], orders["O1"]);
    let guest = scalar_text(
        &ada,
        "SELECT profile_id FROM cdp.identity_links WHERE id_value = 'guest@example.com'",
    )
    .await;
    assert_eq!(orders["O4"], guest, "the guest order resolves by its email");

    // The analyst gets the same profiles, the personal columns masked.
    let masked = simple_rows(
        &ana,
        "SELECT customer_id, email, phone, profile_id FROM resolved.customers ORDER BY 1",
    )
    .await;
    assert_eq!(masked.len(), 3);
    for row in &masked {
        let id = row[0].clone().unwrap();
        assert_eq!(row[3].as_deref(), Some(customers[&id].as_str()));
        for personal in [&row[1], &row[2]] {
            let value = personal.clone().unwrap_or_default();
            assert!(
                !value.contains("example.com") && !value.contains("test.com"),
                "an analyst reads {value}"
            );
        }
    }
    // A filter on a masked column sees what the analyst sees (no probing
    // with a known email), as on the raw table.
    for table in ["raw", "resolved"] {
        let found = scalar(
            &ana,
            &format!("SELECT count(*) FROM {table}.customers WHERE email = 'bob@example.com'"),
        )
        .await;
        assert_eq!(found, 0, "{table}.customers");
    }
    // A filter on the profile and one on a raw column both hold.
    let of_c1 = scalar(
        &ana,
        &format!(
            "SELECT count(*) FROM resolved.orders WHERE profile_id = '{}'",
            orders["O1"]
        ),
    )
    .await;
    assert_eq!(of_c1, 2);
    let o3 = simple_rows(
        &ana,
        "SELECT profile_id FROM resolved.orders WHERE order_id = 'O3'",
    )
    .await;
    assert_eq!(o3, vec![vec![Some(orders["O3"].clone())]]);

    // Landed after the refresh: a known customer's order resolves at once;
    // a new customer's has no profile until a refresh links it.
    land_order(&lake, "O5", "C2").await;
    land_order(&lake, "O6", "C9").await;
    let now = profiles_of(&ana, "SELECT order_id, profile_id FROM resolved.orders").await;
    assert_eq!(now["O5"], orders["O3"]);
    assert_eq!(now["O6"], "-");
    refresh_now(&lake).await;
    let after = profiles_of(&ana, "SELECT order_id, profile_id FROM resolved.orders").await;
    assert_ne!(after["O6"], "-", "the refresh linked C9");
    assert_eq!(
        after["O6"],
        scalar_text(
            &ada,
            "SELECT profile_id FROM cdp.identity_links WHERE id_type = 'customer_id' \
             AND id_value = 'C9'"
        )
        .await
    );

    // BI tools list the schema's tables; tables that feed no identity
    // source are not in it.
    let listed = simple_rows(
        &ana,
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = 'resolved' ORDER BY 1",
    )
    .await;
    let listed: Vec<_> = listed.into_iter().filter_map(|r| r[0].clone()).collect();
    assert!(
        listed.contains(&"orders".to_string()) && listed.contains(&"customers".to_string()),
        "{listed:?}"
    );
    assert!(!listed.contains(&"products".to_string()), "{listed:?}");
}

async fn scalar_text(client: &tokio_postgres::Client, sql: &str) -> String {
    simple_rows(client, sql).await[0][0]
        .clone()
        .expect("a value")
}
