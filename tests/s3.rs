//! The same SQL over a lake in a real S3-compatible server on loopback
//! (`s3s-fs`, in process), reached through `object_store`'s S3 client.

use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use panorama::lake::Lake;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::support::*;

const KEY: &str = "panorama-test";
const SECRET: &str = "panorama-test-secret";

/// An S3 server storing buckets as folders under a root, on loopback; it
/// can be stopped (every connection cut) and started again on its port.
pub struct S3Server {
    pub addr: SocketAddr,
    root: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl S3Server {
    pub async fn start(root: &std::path::Path) -> S3Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = S3Server {
            addr,
            root: root.to_path_buf(),
            task: None,
        };
        server.task = Some(tokio::spawn(serve_s3(listener, server.root.clone())));
        server
    }

    /// Stop listening and drop every open connection.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listen again on the same port.
    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(serve_s3(listener, self.root.clone())));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accept connections until aborted; aborting also ends every connection.
async fn serve_s3(listener: tokio::net::TcpListener, root: std::path::PathBuf) {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = S3ServiceBuilder::new(AtomicCreate::new(fs));
    builder.set_auth(SimpleAuth::from_single(KEY, SECRET));
    let service = builder.build();
    let http = ConnBuilder::new(TokioExecutor::new());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        connections.spawn(async move {
            let _ = conn.await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// `s3s-fs` checks `If-None-Match: *` and writes the object afterwards, so
/// two concurrent conditional puts of one key can both succeed (see
/// docs/upstream.md). AWS S3, MinIO and R2 make that check atomic, and Delta
/// commits rely on it: this wrapper serialises conditional puts so the test
/// server behaves like them. Every other operation goes straight through.
struct AtomicCreate {
    inner: s3s_fs::FileSystem,
    creating: tokio::sync::Mutex<()>,
}

impl AtomicCreate {
    fn new(inner: s3s_fs::FileSystem) -> AtomicCreate {
        AtomicCreate {
            inner,
            creating: tokio::sync::Mutex::new(()),
        }
    }
}

/// Forward S3 operations to the wrapped file system unchanged.
macro_rules! forward {
    ($($op:ident: $input:ident => $output:ident;)*) => {
        $(
            // Spelled as `async_trait` expands an `async fn`: the attribute
            // does not see into macro calls.
            fn $op<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<s3s::dto::$input>,
            ) -> std::pin::Pin<Box<
                dyn std::future::Future<Output = S3Result<S3Response<s3s::dto::$output>>>
                    + Send
                    + 'async_trait,
            >>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(self.inner.$op(req))
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for AtomicCreate {
    async fn put_object(
        &self,
        req: S3Request<s3s::dto::PutObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::PutObjectOutput>> {
        if req.input.if_none_match.is_some() {
            let _one_at_a_time = self.creating.lock().await;
            self.inner.put_object(req).await
        } else {
            self.inner.put_object(req).await
        }
    }

    forward! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        get_object: GetObjectInput => GetObjectOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
}

pub fn s3_options(addr: SocketAddr) -> Vec<(String, String)> {
    [
        ("aws_endpoint", format!("http://{addr}")),
        ("aws_allow_http", "true".into()),
        ("aws_region", "us-east-1".into()),
        ("aws_access_key_id", KEY.into()),
        ("aws_secret_access_key", SECRET.into()),
        ("aws_virtual_hosted_style_request", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_over_a_lake_in_an_s3_bucket() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("cdp-bucket")).unwrap();
    let s3 = S3Server::start(root.path()).await;
    let addr = s3.addr;
    let lake = Lake::open_with_options("s3://cdp-bucket/prod/lake", &s3_options(addr)).unwrap();
    land_fixture(&lake).await;
    assert!(
        root.path()
            .join("cdp-bucket/prod/lake/raw/orders/_delta_log/00000000000000000000.json")
            .is_file(),
        "each raw table is a Delta table in the bucket"
    );

    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let rows = client
        .query(
            "SELECT c.customer_id, sum(o.amount)::float8 AS revenue FROM raw.orders o \
             JOIN raw.customers c ON c.customer_id = o.customer_id \
             WHERE o.status = $1 GROUP BY c.customer_id ORDER BY c.customer_id",
            &[&"completed"],
        )
        .await
        .unwrap();
    let got: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![("C1".to_string(), 120.5), ("C2".to_string(), 99.99)]
    );

    // Point lookups go through the key index on S3 too: its keys, the
    // change marker and the rows are read through the bucket.
    let bob: String = client
        .query_one(
            "SELECT first_name FROM raw.customers WHERE customer_id = $1",
            &[&"C2"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bob, "Bob");
    let order: String = client
        .query_one(
            "SELECT customer_id FROM raw.orders WHERE order_id = $1",
            &[&"O3"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(order, "C2");
    let plan = simple_rows(
        &client,
        "EXPLAIN SELECT first_name FROM raw.customers WHERE customer_id = 'C2'",
    )
    .await;
    assert!(
        plan.iter()
            .flatten()
            .flatten()
            .any(|line| line.contains("LookupExec: rows=1")),
        "{plan:?}"
    );
    server.stop().await;
}
