//! Support for Karmyq's end-to-end tests: devices in temp dirs, a clock the
//! tests control, bundle exchange, forged changes and a look at the files.

use std::path::PathBuf;

use automerge::transaction::{CommitOptions, Transaction};
use automerge::{Automerge, ChangeHash, ReadDoc};
use karmyq_core::{
    Bundle, CommunityId, DocId, Heads, Karmyq, Keypair, Link, MemberId, OpHash, Report, Result,
    SignedChange, Timestamp, actor_of, auth_message,
};
use tempfile::TempDir;

/// A client restored from a member's `secret` in a new temp dir: a new
/// device of that member, holding nothing.
fn restore_in_temp(secret: &str) -> Result<(Karmyq, TempDir)> {
    let dir = tempfile::tempdir()?;
    Ok((Karmyq::restore(dir.path(), secret)?, dir))
}

/// A fixed epoch for tests: 2027-01-15.
pub const EPOCH: i64 = 1_800_000_000_000;

/// `minutes` after the test epoch.
pub fn at(minutes: i64) -> Timestamp {
    Timestamp::from_millis(EPOCH + minutes * 60_000)
}

/// A device: a Karmyq client over its own temp dir.
pub struct Device {
    /// The client.
    pub k: Karmyq,
    dir: TempDir,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({:?})", self.k.member_id())
    }
}

impl Device {
    /// A new device with a new identity.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let k = Karmyq::open(dir.path())?;
        Ok(Device { k, dir })
    }

    /// A relay's replica (what the sync server holds): a client opened
    /// with [`Karmyq::open_relay`], with a new identity.
    pub fn new_relay() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let k = Karmyq::open_relay(dir.path())?;
        Ok(Device { k, dir })
    }

    /// A new device of `of`'s member, restored from their secret, holding
    /// nothing.
    pub fn restored(of: &Device) -> Result<Self> {
        let (k, dir) = restore_in_temp(&of.k.export_secret())?;
        Ok(Device { k, dir })
    }

    /// Closes and reopens the client on the same directory.
    pub fn reopen(&mut self) -> Result<()> {
        self.close(|| Ok(()))
    }

    /// Closes the client, runs `meanwhile` (another process may use the
    /// directory then), and opens it again.
    pub fn close(&mut self, meanwhile: impl FnOnce() -> Result<()>) -> Result<()> {
        // A placeholder holds `k` while the directory is free: a client on
        // a directory of its own.
        let spare = tempfile::tempdir()?;
        drop(std::mem::replace(&mut self.k, Karmyq::open(spare.path())?));
        meanwhile()?;
        self.k = Karmyq::open(self.dir.path())?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The community file of `id`.
    pub fn file(&self, id: CommunityId) -> PathBuf {
        self.dir
            .path()
            .join("communities")
            .join(format!("{id}.sqlite3"))
    }

    /// Rows in a table of the community file, read with a separate
    /// connection (what is really on disk).
    pub fn rows(&self, id: CommunityId, table: &str) -> Result<i64> {
        let conn = rusqlite::Connection::open(self.file(id))?;
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    }

    /// Everything this device holds of the community that `other` lacks.
    pub fn bundle_for(&mut self, other: &mut Device, id: CommunityId) -> Result<Bundle> {
        let heads = match other.k.community(id) {
            Ok(c) => c.heads()?,
            Err(_) => Heads::empty(),
        };
        let reader = other.k.member_id();
        self.k.community(id)?.changes_since_for(&heads, &reader)
    }

    /// Sends this device's news to `other`.
    pub fn send_to(
        &mut self,
        other: &mut Device,
        id: CommunityId,
        now: Timestamp,
    ) -> Result<Report> {
        let bundle = self.bundle_for(other, id)?;
        other.k.receive(&bundle, now)
    }
}

/// Both directions, so the two devices hold the same.
pub fn sync(a: &mut Device, b: &mut Device, id: CommunityId, now: Timestamp) -> Result<()> {
    a.send_to(b, id, now)?;
    b.send_to(a, id, now)?;
    Ok(())
}

/// Alice founds a public community and Bob joins it; both synced at
/// minute 3.
pub fn two_neighbours() -> Result<(Device, Device, CommunityId)> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", karmyq_core::Visibility::Public, at(0))?;
    alice.send_to(&mut bob, id, at(1))?;
    bob.k.community(id)?.join(at(2))?;
    sync(&mut alice, &mut bob, id, at(3))?;
    Ok((alice, bob, id))
}

/// A document rebuilt from the changes of a bundle (what any member holds).
pub fn doc_from(bundle: &Bundle, doc: &DocId) -> Result<Automerge> {
    let mut out = Automerge::new();
    let changes = bundle
        .changes
        .iter()
        .filter(|c| c.envelope.doc == doc.name())
        .map(|c| automerge::Change::from_bytes(c.bytes.clone()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| karmyq_core::Error::Decode { what: "change" })?;
    out.apply_changes(changes)?;
    Ok(out)
}

/// A change made directly on a raw document by `keys`, signed as the API
/// would sign it: what a modified client could send.
pub fn forge(
    community: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    auth_heads: Vec<OpHash>,
    keys: &Keypair,
    edit: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<SignedChange> {
    forge_as(
        community,
        doc_id,
        doc,
        auth_heads,
        keys,
        &keys.member_id(),
        edit,
    )
}

/// Like [`forge`], but the change's Automerge actor is `actor`'s key.
pub fn forge_as(
    community: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    auth_heads: Vec<OpHash>,
    keys: &Keypair,
    actor: &MemberId,
    edit: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<SignedChange> {
    forge_with(community, doc_id, doc, &auth_heads, None, keys, actor, edit)
}

/// Like [`forge`], but the commit message names `previous` as the
/// author's previous change.
pub fn forge_after(
    community: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    auth_heads: Vec<OpHash>,
    previous: Link,
    keys: &Keypair,
    edit: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<SignedChange> {
    let me = keys.member_id();
    forge_with(
        community,
        doc_id,
        doc,
        &auth_heads,
        Some(previous),
        keys,
        &me,
        edit,
    )
}

#[allow(clippy::too_many_arguments)]
fn forge_with(
    community: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    auth_heads: &[OpHash],
    previous: Option<Link>,
    keys: &Keypair,
    actor: &MemberId,
    edit: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<SignedChange> {
    doc.set_actor(actor_of(actor));
    let mut tx = doc.transaction();
    edit(&mut tx)?;
    let (hash, _) =
        tx.commit_with(CommitOptions::default().with_message(auth_message(auth_heads, previous)));
    let hash: ChangeHash = hash.ok_or(karmyq_core::Error::InvalidArgument("empty edit".into()))?;
    let change = doc
        .get_change_by_hash(&hash)
        .ok_or(karmyq_core::Error::InvalidArgument("no change".into()))?;
    Ok(SignedChange::sign(community, doc_id, &change, keys))
}

/// A bundle carrying just these changes.
pub fn bundle_of(community: CommunityId, changes: Vec<SignedChange>) -> Bundle {
    let mut b = Bundle::new(community);
    b.changes = changes;
    b
}

/// Support for the sync tests: a real server on `127.0.0.1:0`, devices
/// running the sync engine, and a hand-written WebSocket client.
pub mod net {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, Instant};

    use futures_util::{SinkExt, StreamExt};
    use karmyq_core::sync::{
        EngineOptions, ErrorCode, Frame, PROTOCOL_VERSION, SyncEngine, SyncStatus, login_message,
    };
    use karmyq_core::{Bundle, CommunityId, Heads, Karmyq, Keypair, SigningTag, Timestamp};
    use karmyq_sync_server::Config;
    use tempfile::TempDir;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// Any error, for tests.
    pub type TestResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// How long a test waits for something that should happen at once.
    pub const PATIENCE: Duration = Duration::from_secs(15);

    /// A sync server on its own runtime, over a temp data directory.
    pub struct TestServer {
        /// The runtime the server (and raw clients) run on.
        pub rt: tokio::runtime::Runtime,
        /// Where it listens.
        pub addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<Result<(), karmyq_sync_server::ServerError>>>,
        /// The data directory.
        pub dir: TempDir,
    }

    impl std::fmt::Debug for TestServer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "TestServer({})", self.addr)
        }
    }

    impl TestServer {
        /// Starts a server with default limits.
        pub fn start() -> TestResult<Self> {
            Self::start_with(|_| {})
        }

        /// Starts a server, letting `tune` change its configuration.
        pub fn start_with(tune: impl FnOnce(&mut Config)) -> TestResult<Self> {
            let dir = tempfile::tempdir()?;
            let mut config = Config::new(dir.path());
            tune(&mut config);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let addr = listener.local_addr()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = rt.spawn(karmyq_sync_server::run(listener, config, async {
                let _ = rx.await;
            }));
            Ok(TestServer {
                rt,
                addr,
                stop: Some(tx),
                task: Some(task),
                dir,
            })
        }

        /// The WebSocket URL of the sync endpoint.
        pub fn url(&self) -> String {
            format!("ws://{}/v1/sync", self.addr)
        }

        /// A plain HTTP GET: status line, headers and body.
        pub fn get(&self, path: &str) -> TestResult<String> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = self.addr;
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            self.rt.block_on(async move {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(request.as_bytes()).await?;
                let mut out = String::new();
                s.read_to_string(&mut out).await?;
                Ok(out)
            })
        }

        /// A plain HTTP POST of a JSON body: status line, headers and body.
        pub fn post(&self, path: &str, body: &str) -> TestResult<String> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = self.addr;
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            self.rt.block_on(async move {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(request.as_bytes()).await?;
                let mut out = String::new();
                s.read_to_string(&mut out).await?;
                Ok(out)
            })
        }

        /// One value of `/metrics` (a full series name, labels included).
        pub fn metric(&self, series: &str) -> TestResult<u64> {
            let text = self.get("/metrics")?;
            Ok(text
                .lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or(0))
        }

        /// Rows in a table of the server's file for a community.
        pub fn rows(&self, id: CommunityId, table: &str) -> TestResult<i64> {
            let path = self
                .dir
                .path()
                .join("communities")
                .join(format!("{id}.sqlite3"));
            let conn = rusqlite::Connection::open(path)?;
            Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        }

        /// Asks the server to stop and waits for it to drain.
        pub fn stop(&mut self) -> TestResult {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            if let Some(task) = self.task.take() {
                self.rt.block_on(task)??;
            }
            Ok(())
        }

        /// Stops the server and starts a new one on the same data
        /// directory (default limits, a new port).
        pub fn restart(&mut self) -> TestResult {
            self.stop()?;
            let listener = self
                .rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            self.addr = listener.local_addr()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let config = Config::new(self.dir.path());
            self.task = Some(
                self.rt
                    .spawn(karmyq_sync_server::run(listener, config, async {
                        let _ = rx.await;
                    })),
            );
            self.stop = Some(tx);
            Ok(())
        }

        /// A raw client, connected.
        pub fn raw(&self) -> TestResult<Raw<'_>> {
            let url = self.url();
            let (ws, _) = self.rt.block_on(tokio_tungstenite::connect_async(url))?;
            Ok(Raw { server: self, ws })
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            let _ = self.stop();
        }
    }

    /// A hand-written WebSocket client: sends whatever bytes a test likes.
    pub struct Raw<'a> {
        server: &'a TestServer,
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    }

    impl std::fmt::Debug for Raw<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Raw")
        }
    }

    impl Raw<'_> {
        /// Sends raw bytes as one binary message.
        pub fn send_bytes(&mut self, bytes: Vec<u8>) -> TestResult {
            self.server
                .rt
                .block_on(self.ws.send(Message::Binary(bytes.into())))?;
            Ok(())
        }

        /// Sends a text message.
        pub fn send_text(&mut self, text: &str) -> TestResult {
            self.server
                .rt
                .block_on(self.ws.send(Message::Text(text.to_owned().into())))?;
            Ok(())
        }

        /// Sends a frame.
        pub fn send(&mut self, frame: &Frame) -> TestResult {
            self.send_bytes(frame.encode())
        }

        /// The next frame, or `None` if the connection closed or nothing
        /// came within `wait`.
        pub fn next_within(&mut self, wait: Duration) -> TestResult<Option<Frame>> {
            let ws = &mut self.ws;
            let got = self.server.rt.block_on(async {
                loop {
                    match tokio::time::timeout(wait, ws.next()).await {
                        Err(_) => return None,
                        Ok(Some(Ok(Message::Binary(b)))) => return Some(b),
                        Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => return None,
                        Ok(Some(Ok(_))) => {}
                    }
                }
            });
            match got {
                None => Ok(None),
                Some(bytes) => Ok(Some(
                    Frame::decode(&bytes).map_err(|e| format!("bad frame from server: {e:?}"))?,
                )),
            }
        }

        /// The next frame; an error if none comes.
        pub fn frame(&mut self) -> TestResult<Frame> {
            self.next_within(PATIENCE)?
                .ok_or_else(|| "no frame from the server".into())
        }

        /// The code of the next frame, which must be an error.
        pub fn next_error(&mut self) -> TestResult<ErrorCode> {
            match self.frame()? {
                Frame::Error { code, .. } => Ok(code),
                other => Err(format!("expected an error, got {other:?}").into()),
            }
        }

        /// Whether the server closed the connection (nothing more comes).
        pub fn closed(&mut self) -> TestResult<bool> {
            Ok(self.next_within(Duration::from_secs(2))?.is_none())
        }

        /// Hello, challenge, login.
        pub fn login(&mut self, keys: &Keypair) -> TestResult {
            self.send(&Frame::Hello {
                version: PROTOCOL_VERSION,
            })?;
            let Frame::Challenge { nonce, context } = self.frame()? else {
                return Err("no challenge".into());
            };
            self.send(&Frame::Login {
                member: keys.member_id(),
                signature: keys.sign(SigningTag::SyncLogin, &login_message(&nonce, &context)),
            })?;
            match self.frame()? {
                Frame::LoginOk { .. } => Ok(()),
                other => Err(format!("login refused: {other:?}").into()),
            }
        }

        /// Subscribes; returns the frames up to `Subscribed` or the error.
        pub fn subscribe(
            &mut self,
            community: CommunityId,
            heads: Heads,
        ) -> TestResult<Vec<Frame>> {
            self.send(&Frame::Subscribe { community, heads })?;
            let mut out = Vec::new();
            loop {
                let f = self.frame()?;
                let done = matches!(f, Frame::Subscribed { .. } | Frame::Error { .. });
                out.push(f);
                if done {
                    return Ok(out);
                }
            }
        }
    }

    /// A device running the sync engine: the client behind a mutex shared
    /// with the engine, and every status it reported.
    pub struct Node {
        /// The client.
        pub k: Arc<Mutex<Karmyq>>,
        /// Statuses reported, in order.
        pub statuses: Arc<Mutex<Vec<SyncStatus>>>,
        engine: Option<SyncEngine>,
        _dir: TempDir,
    }

    impl std::fmt::Debug for Node {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Node")
        }
    }

    /// Fast reconnection, a short poll for local writes.
    pub fn quick() -> EngineOptions {
        EngineOptions {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            poll: Duration::from_millis(50),
        }
    }

    impl Node {
        /// A new device with a new identity.
        pub fn new() -> TestResult<Self> {
            let dir = tempfile::tempdir()?;
            let k = Karmyq::open(dir.path())?;
            Ok(Node {
                k: Arc::new(Mutex::new(k)),
                statuses: Arc::default(),
                engine: None,
                _dir: dir,
            })
        }

        /// A device over a client opened elsewhere (a restored identity).
        pub fn from_client(k: Karmyq, dir: TempDir) -> Self {
            Node {
                k: Arc::new(Mutex::new(k)),
                statuses: Arc::default(),
                engine: None,
                _dir: dir,
            }
        }

        /// Runs `f` on the client.
        pub fn with<T>(
            &self,
            f: impl FnOnce(&mut Karmyq) -> karmyq_core::Result<T>,
        ) -> TestResult<T> {
            let mut k = self.k.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(f(&mut k)?)
        }

        /// Starts syncing a community with a server.
        pub fn go_online(&mut self, server: &TestServer, id: CommunityId) -> TestResult {
            self.go_online_with(server, id, quick())
        }

        /// Starts syncing with a server given by its sync URL.
        pub fn go_online_url(&mut self, url: &str, id: CommunityId) -> TestResult {
            self.start_engine(url, id, quick())
        }

        /// [`Node::go_online`] with engine options.
        pub fn go_online_with(
            &mut self,
            server: &TestServer,
            id: CommunityId,
            options: EngineOptions,
        ) -> TestResult {
            self.start_engine(&server.url(), id, options)
        }

        fn start_engine(
            &mut self,
            url: &str,
            id: CommunityId,
            options: EngineOptions,
        ) -> TestResult {
            let statuses = self.statuses.clone();
            self.engine = Some(SyncEngine::start(
                self.k.clone(),
                url,
                id,
                options,
                move |s| {
                    statuses
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(s)
                },
            )?);
            Ok(())
        }

        /// Stops syncing.
        pub fn go_offline(&mut self) {
            if let Some(e) = self.engine.take() {
                e.stop();
            }
        }

        /// Uploads local writes now.
        pub fn nudge(&self) {
            if let Some(e) = &self.engine {
                e.nudge();
            }
        }

        /// The requests to join the server last pushed to this device.
        pub fn join_requests(&self) -> Vec<karmyq_core::sync::JoinRequest> {
            self.engine
                .as_ref()
                .map(SyncEngine::join_requests)
                .unwrap_or_default()
        }

        /// The last status reported.
        pub fn status(&self) -> Option<SyncStatus> {
            self.statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last()
                .cloned()
        }

        /// Whether some status so far was this one.
        pub fn saw(&self, status: &SyncStatus) -> bool {
            self.statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(status)
        }

        /// The community's heads on this device (empty if not held).
        pub fn heads(&self, id: CommunityId) -> TestResult<Heads> {
            self.with(|k| match k.community(id) {
                Ok(c) => c.heads(),
                Err(_) => Ok(Heads::empty()),
            })
        }
    }

    /// `node` receives community `id`'s log from `founder` (what an invite
    /// link carries), joins it, and goes online with `server`.
    pub fn join_online(
        server: &TestServer,
        founder: &Node,
        node: &mut Node,
        id: CommunityId,
    ) -> TestResult {
        let log = founder.with(|k| k.community(id)?.changes_since(&Heads::empty()))?;
        join_with(server, &log, node, id)
    }

    /// A new phone of `node`'s member, restored from their secret, holding
    /// nothing.
    pub fn phone_of(node: &Node) -> TestResult<Node> {
        let secret = node.with(|k| Ok(k.export_secret()))?;
        let (k, dir) = super::restore_in_temp(&secret)?;
        Ok(Node::from_client(k, dir))
    }

    /// `node` receives `invite` (what it got of community `id` by hand),
    /// joins, and goes online with `server`.
    pub fn join_with(
        server: &TestServer,
        invite: &Bundle,
        node: &mut Node,
        id: CommunityId,
    ) -> TestResult {
        node.with(|k| {
            k.receive(invite, Timestamp::now())?;
            k.community(id)?.join(Timestamp::now())
        })?;
        node.go_online(server, id)
    }

    /// A public community `founder` creates and syncs with `server`; each
    /// of `joiners` joins it online ([`join_online`]). Returns once the
    /// founder sees every member.
    pub fn public_community(
        server: &TestServer,
        founder: &mut Node,
        joiners: &mut [&mut Node],
        name: &str,
    ) -> TestResult<CommunityId> {
        let id = founder.with(|k| {
            k.create_community(name, "", karmyq_core::Visibility::Public, Timestamp::now())
        })?;
        founder.go_online(server, id)?;
        for node in joiners.iter_mut() {
            join_online(server, founder, node, id)?;
        }
        let everyone = joiners.len() + 1;
        wait_until("every member at the founder's", || {
            founder.with(|k| Ok(k.community(id)?.members()?.len() == everyone))
        })?;
        Ok(id)
    }

    /// Waits until `cond` holds, or fails after [`PATIENCE`] naming `what`.
    pub fn wait_until(what: &str, mut cond: impl FnMut() -> TestResult<bool>) -> TestResult {
        let start = Instant::now();
        loop {
            if cond()? {
                return Ok(());
            }
            if start.elapsed() > PATIENCE {
                return Err(format!("timed out waiting for: {what}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
