//! A real S3-protocol server for the tests: `s3s-fs` serving a temporary
//! folder on 127.0.0.1, on a runtime of its own. kiln talks to it through
//! `object_store`'s S3 client, as it would to AWS or MinIO.

use std::net::SocketAddr;
use std::path::Path;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use hyper_util::rt::TokioIo;

const KEY: &str = "kiln-test";
const SECRET: &str = "kiln-test-secret";

/// A running server with one bucket, `kiln`.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
    stall: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    served: Arc<AtomicU64>,
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("kiln")).unwrap();
        Self::serve(root, "127.0.0.1:0".parse().unwrap())
    }

    fn serve(root: tempfile::TempDir, at: SocketAddr) -> S3Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut service = s3s::service::S3ServiceBuilder::new(fs);
        service.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
        let service = service.build();
        let stall = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let (stall_flag, held_count, served_bytes) = (stall.clone(), held.clone(), served.clone());
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (service, stall, held, served) = (
                    service.clone(),
                    stall_flag.clone(),
                    held_count.clone(),
                    served_bytes.clone(),
                );
                async move {
                    let read = req.method() == hyper::Method::GET;
                    let value_upload =
                        req.method() == hyper::Method::PUT && req.uri().path().contains("/blobs/");
                    if value_upload && stall.load(Ordering::SeqCst) {
                        held.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    let response = hyper::service::Service::call(&service, req).await;
                    if let (true, Ok(r)) = (read, &response) {
                        let length = r
                            .headers()
                            .get(hyper::header::CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                        served.fetch_add(length.unwrap_or(0), Ordering::SeqCst);
                    }
                    response
                }
            });
        let listener = runtime.block_on(tokio::net::TcpListener::bind(at)).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        S3Server {
            addr,
            root,
            runtime: Some(runtime),
            stall,
            held,
            served,
        }
    }

    /// Holds every upload of a value from now on, unanswered (`false` lets them through again).
    pub fn stall_value_uploads(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    /// Waits until an upload is being held.
    pub fn wait_for_held_upload(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.held.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "no value upload came");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.held.store(0, Ordering::SeqCst);
    }

    /// Bytes of objects read from it since the last call.
    pub fn take_bytes_served(&self) -> u64 {
        self.served.swap(0, Ordering::SeqCst)
    }

    /// Stops answering (open connections are dropped).
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Starts answering again on the same address, from the same folder.
    pub fn restart(self) -> S3Server {
        let mut old = self;
        old.stop();
        let (addr, root) = (
            old.addr,
            std::mem::replace(&mut old.root, tempfile::tempdir().unwrap()),
        );
        // The port may take a moment to be free again.
        for _ in 0..50 {
            if std::net::TcpListener::bind(addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self::serve(root, addr)
    }

    /// `s3://kiln/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://kiln/{prefix}")
    }

    /// The environment a kiln process needs to reach the server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
        ]
    }

    /// The folder holding the bucket's objects.
    pub fn bucket_dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
