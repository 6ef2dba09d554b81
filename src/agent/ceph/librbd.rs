//! Reading an image as of one snapshot through librbd, for checksums of mirror snapshots.
//!
//! Why librbd and not the `rbd` CLI (measured on 16.2.15): mirror snapshots live in the mirror snapshot
//! namespace, so `pool/image@name` cannot name them (`rbd export` and `rbd clone` look names up in the user
//! namespace only), and neither command has a `--snap-id` on Pacific. `rbd_clone4`, which clones a snapshot
//! by id, only exists from Reef. librbd opens an image read-only at a snapshot id (`rbd_snap_set_by_id`),
//! which writes nothing to the cluster (no lock, no header update, no clone to clean up afterwards).
//!
//! `librados.so.2` and `librbd.so.1` are loaded when first needed, not linked: the agent builds and runs
//! without Ceph's development packages, and only this capability needs the libraries on the agent's host
//! (where the `rbd` CLI already brings them). Calls block, so they run on a blocking thread; the read stops
//! between chunks once the caller gives up.

use std::{
    ffi::{c_char, c_int, c_void, CString},
    path::Path,
    ptr,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::Duration,
};

use libloading::Library;

/// One read: memory stays bounded by this whatever the image's size (an object of the default layout).
const CHUNK: usize = 4 << 20;
const ENOENT: i32 = 2;
const ETIMEDOUT: i32 = 110;

type RadosT = *mut c_void;
type IoCtxT = *mut c_void;
type ImageT = *mut c_void;

/// Declares [`Api`], the C functions used (prototypes from librados.h and librbd.h of Pacific), and
/// `load`, which resolves each from its library once: one list for both, so they cannot disagree.
macro_rules! c_api {
    ($($library:ident = $file:literal { $($name:ident: fn($($arg:ty),*) -> $ret:ty;)* })*) => {
        struct Api {
            $($($name: unsafe extern "C" fn($($arg),*) -> $ret,)*)*
            /// The function pointers above point into these; they stay loaded for the life of the process.
            _libraries: Vec<Library>,
        }

        fn load() -> Result<Api, ReadError> {
            $(let $library = open($file)?;)*
            Ok(Api {
                $($($name: symbol(&$library, $file, stringify!($name))?,)*)*
                _libraries: vec![$($library),*],
            })
        }
    };
}

c_api! {
    rados = "librados.so.2" {
        rados_create2: fn(*mut RadosT, *const c_char, *const c_char, u64) -> c_int;
        rados_conf_read_file: fn(RadosT, *const c_char) -> c_int;
        rados_conf_set: fn(RadosT, *const c_char, *const c_char) -> c_int;
        rados_connect: fn(RadosT) -> c_int;
        rados_shutdown: fn(RadosT) -> ();
        rados_ioctx_create: fn(RadosT, *const c_char, *mut IoCtxT) -> c_int;
        rados_ioctx_destroy: fn(IoCtxT) -> ();
    }
    rbd = "librbd.so.1" {
        rbd_open_read_only: fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
        rbd_close: fn(ImageT) -> c_int;
        rbd_snap_set_by_id: fn(ImageT, u64) -> c_int;
        rbd_get_size: fn(ImageT, *mut u64) -> c_int;
        rbd_read: fn(ImageT, u64, usize, *mut c_char) -> isize;
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum ReadError {
    #[error("cannot load {library} (install librbd1): {message}")]
    Library { library: String, message: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("no monitor answered within {0:?}")]
    Unreachable(Duration),
    #[error("{call} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Call { call: String, errno: i32 },
    #[error("the read was abandoned")]
    Abandoned,
}

/// Where and as whom to connect: what `CephCli`'s target names.
pub(super) struct Connection<'a> {
    pub conf: Option<&'a Path>,
    pub cluster: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub keyring: Option<&'a Path>,
    pub connect_timeout: Duration,
}

/// What was read: the image's size at the snapshot and the BLAKE3 of its bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Digest {
    pub size: u64,
    pub blake3: String,
}

/// Reads `pool/image` as of snapshot `at` (its head when `None`) from start to end and hashes it; stops with
/// `Abandoned` once `abandoned` is set. Blocking.
pub(super) fn checksum(
    connection: &Connection,
    pool: &str,
    image: &str,
    at: Option<u64>,
    abandoned: &AtomicBool,
) -> Result<Digest, ReadError> {
    let api = api()?;
    let cluster = Cluster::connect(api, connection)?;
    let ioctx = cluster.ioctx(pool)?;
    let open = ioctx.open_read_only(image)?;
    let what = || match at {
        Some(snap_id) => format!("snapshot {snap_id} of image {pool}/{image}"),
        None => format!("image {pool}/{image}"),
    };
    if let Some(snap_id) = at {
        // SAFETY: `open.0` is an open image handle until `open` drops.
        check(
            unsafe { (api.rbd_snap_set_by_id)(open.0, snap_id) },
            what,
            "rbd_snap_set_by_id",
        )?;
    }
    let mut size = 0u64;
    // SAFETY: as above; `size` outlives the call.
    check(
        unsafe { (api.rbd_get_size)(open.0, &mut size) },
        what,
        "rbd_get_size",
    )?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        if abandoned.load(Ordering::Relaxed) {
            return Err(ReadError::Abandoned);
        }
        let length = usize::try_from(size - offset).map_or(CHUNK, |left| left.min(CHUNK));
        // SAFETY: `buffer` holds at least `length` bytes and is not aliased during the call.
        let read = unsafe { (api.rbd_read)(open.0, offset, length, buffer.as_mut_ptr().cast()) };
        let read = usize::try_from(read).map_err(|_| {
            let errno = i32::try_from(-read).unwrap_or(i32::MAX);
            match errno {
                ENOENT => ReadError::NotFound { what: what() },
                _ => ReadError::Call {
                    call: format!("rbd_read of {} at offset {offset}", what()),
                    errno,
                },
            }
        })?;
        if read == 0 {
            // The snapshot cannot shrink; a short image would hash differently from its peer's, so say so.
            return Err(ReadError::Call {
                call: format!(
                    "rbd_read of {} at offset {offset} (no bytes before the end)",
                    what()
                ),
                errno: 5,
            });
        }
        hasher.update(&buffer[..read]);
        offset += read as u64;
    }
    Ok(Digest {
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

fn api() -> Result<&'static Api, ReadError> {
    static API: OnceLock<Result<Api, ReadError>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn open(library: &str) -> Result<Library, ReadError> {
    // SAFETY: loading Ceph's client libraries runs their initialisers, which have no preconditions.
    unsafe { Library::new(library) }.map_err(|error| ReadError::Library {
        library: library.to_string(),
        message: error.to_string(),
    })
}

/// The function `name` of `library`, as the C prototype `F` that `c_api!` declares for it.
fn symbol<F: Copy>(library: &Library, file: &str, name: &str) -> Result<F, ReadError> {
    let mut symbol = name.as_bytes().to_vec();
    symbol.push(0);
    // SAFETY: `F` is the function's prototype in the library's C header (see `c_api!`).
    unsafe { library.get::<F>(&symbol) }
        .map(|function| *function)
        .map_err(|error| ReadError::Library {
            library: format!("{name} from {file}"),
            message: error.to_string(),
        })
}

/// A negative errno as an error: `NotFound` for ENOENT, naming `what`.
fn check(code: c_int, what: impl FnOnce() -> String, call: &str) -> Result<(), ReadError> {
    match -code {
        errno if errno <= 0 => Ok(()),
        ENOENT => Err(ReadError::NotFound { what: what() }),
        errno => Err(ReadError::Call {
            call: format!("{call} for {}", what()),
            errno,
        }),
    }
}

fn c_string(value: &str) -> Result<CString, ReadError> {
    CString::new(value).map_err(|_| ReadError::Call {
        call: format!("naming {value:?}"),
        errno: 22,
    })
}

fn path_string(path: &Path) -> Result<CString, ReadError> {
    c_string(&path.to_string_lossy())
}

/// A connected `rados_t`; shut down on drop.
struct Cluster {
    api: &'static Api,
    handle: RadosT,
}

impl Cluster {
    fn connect(api: &'static Api, connection: &Connection) -> Result<Cluster, ReadError> {
        let cluster_name = c_string(connection.cluster.unwrap_or("ceph"))?;
        let user = c_string(&format!("client.{}", connection.client_id.unwrap_or("admin")))?;
        let mut handle = ptr::null_mut();
        // SAFETY: the out pointer and both strings are valid for the call.
        let created = unsafe { (api.rados_create2)(&mut handle, cluster_name.as_ptr(), user.as_ptr(), 0) };
        check(created, || "the cluster handle".into(), "rados_create2")?;
        let cluster = Cluster { api, handle };
        let conf = connection.conf.map(path_string).transpose()?;
        let conf_ptr = conf.as_ref().map_or(ptr::null(), |conf| conf.as_ptr());
        // SAFETY: a null path searches Ceph's default locations, as the CLIs do.
        let read = unsafe { (api.rados_conf_read_file)(handle, conf_ptr) };
        check(
            read,
            || "the Ceph configuration file".into(),
            "rados_conf_read_file",
        )?;
        let timeout = connection.connect_timeout.as_secs().max(1).to_string();
        let mut settings = vec![
            ("client_mount_timeout", timeout.clone()),
            // A read that hangs on an OSD that went away fails instead of holding the agent's thread.
            ("rados_osd_op_timeout", timeout.clone()),
            ("rados_mon_op_timeout", timeout),
            // One process may hold several handles; a shared admin socket path would collide.
            ("admin_socket", String::new()),
            ("log_to_stderr", "false".into()),
            ("err_to_stderr", "false".into()),
            // Each byte is read once: caching it only costs memory.
            ("rbd_cache", "false".into()),
        ];
        if let Some(keyring) = connection.keyring {
            settings.push(("keyring", keyring.to_string_lossy().into_owned()));
        }
        for (option, value) in settings {
            let (name, text) = (c_string(option)?, c_string(&value)?);
            // SAFETY: both strings are valid for the call.
            let set = unsafe { (api.rados_conf_set)(handle, name.as_ptr(), text.as_ptr()) };
            check(set, || format!("option {option}"), "rados_conf_set")?;
        }
        // SAFETY: the handle is configured and not yet connected.
        match unsafe { (api.rados_connect)(handle) } {
            code if -code == ETIMEDOUT => Err(ReadError::Unreachable(connection.connect_timeout)),
            code => check(code, || "the cluster".into(), "rados_connect").map(|()| cluster),
        }
    }

    fn ioctx(&self, pool: &str) -> Result<IoCtx<'_>, ReadError> {
        let name = c_string(pool)?;
        let mut handle = ptr::null_mut();
        // SAFETY: the cluster is connected; the out pointer and the name are valid for the call.
        let created = unsafe { (self.api.rados_ioctx_create)(self.handle, name.as_ptr(), &mut handle) };
        check(created, || format!("pool {pool}"), "rados_ioctx_create")?;
        Ok(IoCtx {
            cluster: self,
            handle,
            pool: pool.to_string(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: every I/O context and image of this handle borrows it, so they are gone by now.
        unsafe { (self.api.rados_shutdown)(self.handle) }
    }
}

/// A pool's I/O context; destroyed on drop.
struct IoCtx<'a> {
    cluster: &'a Cluster,
    handle: IoCtxT,
    pool: String,
}

impl IoCtx<'_> {
    fn open_read_only(&self, image: &str) -> Result<Image<'_>, ReadError> {
        let name = c_string(image)?;
        let mut handle = ptr::null_mut();
        let api = self.cluster.api;
        // SAFETY: the context is valid; a null snapshot name opens the image's head, moved off right after.
        let opened =
            unsafe { (api.rbd_open_read_only)(self.handle, name.as_ptr(), &mut handle, ptr::null()) };
        check(
            opened,
            || format!("image {}/{image}", self.pool),
            "rbd_open_read_only",
        )?;
        Ok(Image(handle, self))
    }
}

impl Drop for IoCtx<'_> {
    fn drop(&mut self) {
        // SAFETY: images opened from this context borrow it, so they are closed by now.
        unsafe { (self.cluster.api.rados_ioctx_destroy)(self.handle) }
    }
}

/// An image opened read-only; closed on drop.
struct Image<'a>(ImageT, &'a IoCtx<'a>);

impl Drop for Image<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rbd_open_read_only` and is closed once.
        unsafe { (self.1.cluster.api.rbd_close)(self.0) };
    }
}
