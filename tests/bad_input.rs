//! Bad input gets a precise error with a SQLSTATE, and the same connection
//! keeps working afterwards.

use object_store::ObjectStoreExt;
use object_store::path::Path;
use panorama::schema::RawTable;

use crate::support::*;

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {err}"))
}

#[tokio::test]
async fn syntax_errors_and_unknown_tables_leave_the_session_usable() {
    let Fixture {
        dir: _dir,
        lake: _,
        server,
        client,
    } = serve_fixture().await;

    let err = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42601", "{err:?}");

    let err = client
        .query("SELECT * FROM raw.nope", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("nope"), "{message}");

    let err = client
        .query("SELECT no_such_column FROM raw.orders", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42703", "{err:?}");

    let row = client
        .query_one("SELECT count(*) FROM raw.orders", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
    server.stop().await;
}

#[tokio::test]
async fn a_truncated_parquet_file_is_named_and_other_tables_keep_working() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    // A file cut short mid-write by some other tool.
    let full = panorama::lake::delta::files(&lake, &Path::from("raw/orders"))
        .await
        .unwrap()
        .files;
    let good = lake
        .store()
        .get(&full[0].meta.location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    commit_foreign_file(
        &lake,
        RawTable::Orders,
        "part-broken.parquet",
        good.slice(0..good.len() / 2),
    )
    .await;

    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let err = client
        .query("SELECT sum(amount) FROM raw.orders", &[])
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("part-broken.parquet"),
        "the error must name the broken file: {err:?}"
    );

    let row = client
        .query_one("SELECT count(*) FROM raw.customers", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3, "other tables keep working");
    server.stop().await;
}

/// Send `bytes` on a fresh connection, close our side, and read until the
/// server closes; returns what it answered. Panics if it never closes.
async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything: that is fine.
    let _ = socket.write_all(bytes).await;
    let _ = socket.shutdown().await;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes a connection it cannot use")
    .ok();
    answer
}

/// A valid startup message for `user`.
fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for (k, v) in [("user", user), ("database", "panorama")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend(body);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_postgres_port_is_closed_cleanly_and_others_keep_working() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;

    // An HTTP request, random bytes, an absurd length, a bad protocol.
    send_raw(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    send_raw(server.addr, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).await;
    send_raw(server.addr, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await;
    send_raw(server.addr, &[0, 0, 0, 8, 0, 9, 0, 0]).await;
    // A valid start-up followed by a message of an unknown type and one
    // claiming to be 1 GB long.
    let mut bytes = startup("panorama");
    bytes.extend_from_slice(&[b'!', 0, 0, 0, 4]);
    send_raw(server.addr, &bytes).await;
    let mut bytes = startup("panorama");
    bytes.extend_from_slice(&[b'Q', 0x40, 0, 0, 0, b'S']);
    send_raw(server.addr, &bytes).await;

    // A property test over the start-up and message decoding: random
    // bytes, and valid start-ups with random bytes flipped or appended.
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for case in 0..300 {
        send_raw(server.addr, &random_input(&mut rng, case % 3)).await;
    }

    // A client that goes away in the middle of a long query.
    {
        let quitter = server.client().await;
        let slow = tokio::spawn(async move {
            let _ = quitter
                .query(
                    "SELECT count(*) FROM range(0, 20000000000) t WHERE value % 7 = 3",
                    &[],
                )
                .await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        slow.abort();
    }
    // Everyone else was served throughout, and still is.
    assert_eq!(scalar(&client, "SELECT count(*) FROM raw.orders").await, 4);
    let fresh = server.client().await;
    assert_eq!(
        scalar(&fresh, "SELECT count(*) FROM raw.customers").await,
        3
    );
}

/// Random input of one of four kinds: random bytes (0), a valid start-up
/// with bytes flipped (1) or random bytes appended (2), or a valid start-up
/// followed by random framed messages (3).
fn random_input(rng: &mut impl rand::Rng, kind: u64) -> Vec<u8> {
    match kind {
        0 => (0..rng.random_range(1..64)).map(|_| rng.random()).collect(),
        1 => {
            let mut b = startup("panorama");
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            b
        }
        2 => {
            let mut b = startup("panorama");
            b.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>()));
            b
        }
        _ => {
            let mut b = startup("panorama");
            for _ in 0..rng.random_range(1..6) {
                b.extend(framed_message(rng));
            }
            b
        }
    }
}

/// One random message of the extended or simple protocol, framed as the
/// protocol frames them (type byte, length) so decoding reaches the body.
fn framed_message(rng: &mut impl rand::Rng) -> Vec<u8> {
    const TYPES: &[u8] = b"QPBEDSCHXFdcfp!";
    let kind = TYPES[rng.random_range(0..TYPES.len())];
    let body: Vec<u8> = match rng.random_range(0..3) {
        // Plausible bodies: NUL-terminated names and SQL, counts, formats.
        0 => {
            let mut b = b"s1\0SELECT $1::int8, count(*) FROM raw.orders\0".to_vec();
            b.extend((0..rng.random_range(0..12)).map(|_| rng.random_range(0..4u8)));
            b
        }
        1 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        _ => Vec::new(),
    };
    // Sometimes a length that lies.
    let length = match rng.random_range(0..8) {
        0 => rng.random::<u32>(),
        1 => rng.random_range(0..4),
        _ => (body.len() + 4) as u32,
    };
    let mut message = vec![kind];
    message.extend_from_slice(&length.to_be_bytes());
    message.extend(body);
    message
}

/// A property test over start-up and message decoding, against the real
/// binary so that a panic anywhere shows in its log: random bytes, valid
/// start-ups with bytes flipped or appended, and valid start-ups followed by
/// random framed messages. `PANORAMA_FUZZ_CASES` (default 600) and
/// `PANORAMA_FUZZ_SEED` run it longer or elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_protocol_input_is_contained_to_its_connection() {
    use rand::SeedableRng;
    let (dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let served = Served::start(&[
        "serve".as_ref(),
        "--lake".as_ref(),
        dir.path().as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--no-seed".as_ref(),
        "--no-collect".as_ref(),
    ])
    .await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], served.pg_port).into();
    let cases: u64 = std::env::var("PANORAMA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let seed: u64 = std::env::var("PANORAMA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for case in 0..cases {
        send_raw(addr, &random_input(&mut rng, case % 4)).await;
    }
    // A message pgwire cannot decode (CopyData claiming 2 bytes, less than
    // its own length field) gets PostgreSQL's protocol-violation error and a
    // closed connection.
    let mut bytes = startup("panorama");
    bytes.extend_from_slice(&[b'd', 0, 0, 0, 2]);
    let answer = send_raw(addr, &bytes).await;
    assert!(
        answer.windows(5).any(|w| w == b"08P01"),
        "no protocol error in {answer:?}"
    );
    // Everyone else is still served.
    let client = served.client().await;
    assert_eq!(scalar(&client, "SELECT count(*) FROM raw.orders").await, 4);
    // pgwire 0.41.1 decodes a message body past its stated length and
    // trusts lengths under 4, so some malformed messages panic inside its
    // decoder (`bytes`' bounds checks): the server catches the panic and
    // answers as above. No panic may come from anywhere else, and each one
    // was answered.
    let log = served.log();
    let locations: Vec<&str> = log
        .iter()
        // src/pgwire/panics.rs logs "a bug: a panic at <file:line:col> (…".
        .filter_map(|l| l.split("a panic at ").nth(1))
        .collect();
    let elsewhere: Vec<&&str> = locations
        .iter()
        .filter(|at| !at.contains("/pgwire-0.41.1/src/messages/") && !at.contains("/bytes-"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "{cases} cases, seed {seed}: panics outside pgwire's decoder: {elsewhere:#?}"
    );
    let answered = log
        .iter()
        .filter(|l| l.contains("closed a connection that sent a malformed message"))
        .count();
    assert_eq!(
        answered,
        locations.len(),
        "every caught panic closes its connection"
    );
    eprintln!(
        "{cases} fuzz cases (seed {seed}): {} connections closed by a panic in pgwire's \
         message decoding (answered with 08P01), none elsewhere",
        locations.len()
    );
}
