//! The exported side of the ABI: `extern "C"` trampolines that adapt the safe traits to the
//! raw function table, catch every panic at the boundary, and route log lines and errors
//! through the host's callbacks. Used by [`crate::export_plugin!`].

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::abi::*;
use crate::objective::{Inputs, Ops};
use crate::tokens::{TokenAugmentation, TokenSeq};
use crate::{Augmentation, Error, Image, ImageMut, ImageShape, Level, Objective, Params, Rng};

thread_local! {
    static CURRENT_HOST: Cell<*const PtxHost> = const { Cell::new(std::ptr::null()) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Replace this library's panic hook (the plugin has its own copy of std) with one that
/// records the message instead of printing it; the trampoline hands it to the host.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(record_panic));
    });
}

/// Keep the message and location of a panic for the trampoline that catches it.
pub(crate) fn record_panic(info: &std::panic::PanicHookInfo<'_>) {
    let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    let loc = info
        .location()
        .map(|l| format!(" ({}:{})", l.file(), l.line()))
        .unwrap_or_default();
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{loc}")));
}

pub(crate) fn log_through_host(level: Level, msg: &str) {
    CURRENT_HOST.with(|h| {
        let host = h.get();
        if host.is_null() {
            return;
        }
        let lvl = match level {
            Level::Error => LOG_ERROR,
            Level::Warn => LOG_WARN,
            Level::Info => LOG_INFO,
            Level::Debug => LOG_DEBUG,
            Level::Trace => LOG_TRACE,
        };
        // SAFETY: the host pointer is valid for the duration of the current plugin call.
        unsafe { ((*host).log)((*host).ctx, lvl, PtxStr::borrowed(msg)) };
    });
}

unsafe fn set_error(host: *const PtxHost, msg: &str) {
    if !host.is_null() {
        ((*host).set_error)((*host).ctx, PtxStr::borrowed(msg));
    }
}

/// Run `f` as one plugin call: set the current host, catch panics, report errors.
unsafe fn guard(host: *const PtxHost, what: &str, f: impl FnOnce() -> Result<(), Error>) -> i32 {
    install_panic_hook();
    let prev = CURRENT_HOST.with(|h| h.replace(host));
    let result = catch_unwind(AssertUnwindSafe(f));
    CURRENT_HOST.with(|h| h.set(prev));
    match result {
        Ok(Ok(())) => PTX_OK,
        Ok(Err(Error::Msg(m))) => {
            set_error(host, &m);
            PTX_ERROR
        }
        Ok(Err(Error::Host)) => PTX_ERROR,
        Err(_) => {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(host, &format!("the plugin panicked in `{what}`: {msg}"));
            PTX_PANIC
        }
    }
}

// ------------------------------------------------------------------------------ objectives

/// Shared body of both `create` trampolines: read params, build, reject unknown keys.
unsafe fn create_boxed<T>(
    host: *const PtxHost,
    owner: &str,
    params: *const PtxParam,
    n: usize,
    out: *mut *mut c_void,
    build: impl FnOnce(&mut Params) -> Result<T, Error>,
) -> i32 {
    guard(host, "create", || {
        let mut p = Params::from_raw(owner, params, n)?;
        let value = build(&mut p)?;
        p.finish()?;
        *out = Box::into_raw(Box::new(value)) as *mut c_void;
        Ok(())
    })
}

unsafe extern "C" fn obj_create<T: Objective>(
    host: *const PtxHost,
    params: *const PtxParam,
    n: usize,
    out: *mut *mut c_void,
) -> i32 {
    create_boxed(host, T::NAME, params, n, out, T::new)
}

unsafe extern "C" fn obj_needs<T: Objective>(
    inst: *mut c_void,
    host: *const PtxHost,
    out: *mut PtxObjectiveNeeds,
) -> i32 {
    guard(host, "needs", || {
        let obj = &*(inst as *const T);
        let mut raw = obj.needs().to_raw();
        raw.n_params = obj.parameters().len() as u32;
        *out = raw;
        Ok(())
    })
}

unsafe extern "C" fn obj_param_decl<T: Objective>(
    inst: *mut c_void,
    host: *const PtxHost,
    index: u32,
    out: *mut PtxParamDecl,
) -> i32 {
    guard(host, "param_decl", || {
        let obj = &*(inst as *const T);
        let params = obj.parameters();
        let spec = params.get(index as usize).ok_or_else(|| {
            Error::msg(format!(
                "no trainable tensor {index}: the objective declares {}",
                params.len()
            ))
        })?;
        *out = spec.to_raw();
        Ok(())
    })
}

unsafe extern "C" fn obj_loss<T: Objective>(
    inst: *mut c_void,
    host: *const PtxHost,
    ops: *const PtxTensorOps,
    inputs: *const PtxObjectiveInputs,
    out: *mut Handle,
) -> i32 {
    guard(host, "loss", || {
        let obj = &mut *(inst as *mut T);
        let ops = Ops::from_raw(ops);
        let inputs = Inputs {
            raw: &*inputs,
            ops: &ops,
        };
        let loss = obj.loss(&ops, &inputs)?;
        *out = loss.handle();
        Ok(())
    })
}

unsafe extern "C" fn obj_destroy<T: Objective>(inst: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(inst as *mut T))));
}

/// The ABI table entry for objective `T`.
pub fn objective_entry<T: Objective>() -> PtxObjectiveEntry {
    PtxObjectiveEntry {
        name: PtxStr::from_static(T::NAME),
        summary: PtxStr::from_static(T::SUMMARY),
        params_doc: PtxStr::from_static(T::PARAMS_DOC),
        create: obj_create::<T>,
        needs: obj_needs::<T>,
        loss: obj_loss::<T>,
        param_decl: obj_param_decl::<T>,
        destroy: obj_destroy::<T>,
    }
}

// --------------------------------------------------------------------------- augmentations

unsafe fn image_shape(b: &PtxBuffer, what: &str) -> Result<ImageShape, Error> {
    if b.dtype != DTYPE_F32 || b.rank != 3 {
        return Err(Error::msg(format!(
            "{what}: expected an f32 image of rank 3 (c, h, w), got dtype {} rank {}",
            b.dtype, b.rank
        )));
    }
    Ok(ImageShape {
        channels: b.shape[0] as usize,
        height: b.shape[1] as usize,
        width: b.shape[2] as usize,
    })
}

unsafe extern "C" fn aug_create<T: Augmentation>(
    host: *const PtxHost,
    params: *const PtxParam,
    n: usize,
    out: *mut *mut c_void,
) -> i32 {
    create_boxed(host, T::NAME, params, n, out, T::new)
}

unsafe extern "C" fn aug_output_shape<T: Augmentation>(
    inst: *mut c_void,
    host: *const PtxHost,
    input: *const PtxBuffer,
    out: *mut PtxBuffer,
) -> i32 {
    guard(host, "output_shape", || {
        let aug = &*(inst as *const T);
        let s = aug.output_shape(image_shape(&*input, T::NAME)?)?;
        let o = &mut *out;
        o.dtype = DTYPE_F32;
        o.rank = 3;
        o.shape = [s.channels as u32, s.height as u32, s.width as u32, 0];
        Ok(())
    })
}

unsafe extern "C" fn aug_apply<T: Augmentation>(
    inst: *mut c_void,
    host: *const PtxHost,
    seed: u64,
    input: *const PtxBuffer,
    output: *mut PtxBuffer,
) -> i32 {
    guard(host, "apply", || {
        let aug = &*(inst as *const T);
        let (ib, ob) = (&*input, &*output);
        let is = image_shape(ib, T::NAME)?;
        let os = image_shape(ob, T::NAME)?;
        if ib.data.is_null() || ob.data.is_null() {
            return Err(Error::msg(format!("{}: null image buffer", T::NAME)));
        }
        let inp = Image {
            shape: is,
            data: std::slice::from_raw_parts(ib.data as *const f32, is.len()),
        };
        let out = ImageMut {
            shape: os,
            data: std::slice::from_raw_parts_mut(ob.data as *mut f32, os.len()),
        };
        let mut rng = Rng::new(seed);
        aug.apply(&mut rng, inp, out)
    })
}

unsafe extern "C" fn aug_destroy<T: Augmentation>(inst: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(inst as *mut T))));
}

/// The ABI table entry for augmentation `T`.
pub fn augment_entry<T: Augmentation>() -> PtxAugmentEntry {
    PtxAugmentEntry {
        name: PtxStr::from_static(T::NAME),
        summary: PtxStr::from_static(T::SUMMARY),
        params_doc: PtxStr::from_static(T::PARAMS_DOC),
        modality: MODALITY_IMAGE,
        create: aug_create::<T>,
        output_shape: aug_output_shape::<T>,
        apply: aug_apply::<T>,
        destroy: aug_destroy::<T>,
    }
}

// --------------------------------------------------------------------- token augmentations

/// `(length, vocabulary size)` of a token buffer: `u32` ids, rank 2, shape `[len, vocab]`.
unsafe fn token_shape(b: &PtxBuffer, what: &str) -> Result<(usize, usize), Error> {
    if b.dtype != DTYPE_U32 || b.rank != 2 {
        return Err(Error::msg(format!(
            "{what}: expected a u32 token sequence of rank 2 (length, vocabulary), got dtype {} rank {}",
            b.dtype, b.rank
        )));
    }
    Ok((b.shape[0] as usize, b.shape[1] as usize))
}

unsafe extern "C" fn tok_create<T: TokenAugmentation>(
    host: *const PtxHost,
    params: *const PtxParam,
    n: usize,
    out: *mut *mut c_void,
) -> i32 {
    create_boxed(host, T::NAME, params, n, out, T::new)
}

unsafe extern "C" fn tok_output_shape<T: TokenAugmentation>(
    _inst: *mut c_void,
    host: *const PtxHost,
    input: *const PtxBuffer,
    out: *mut PtxBuffer,
) -> i32 {
    guard(host, "output_shape", || {
        let (len, vocab) = token_shape(&*input, T::NAME)?;
        let o = &mut *out;
        o.dtype = DTYPE_U32;
        o.rank = 2;
        o.shape = [len as u32, vocab as u32, 0, 0];
        Ok(())
    })
}

unsafe extern "C" fn tok_apply<T: TokenAugmentation>(
    inst: *mut c_void,
    host: *const PtxHost,
    seed: u64,
    input: *const PtxBuffer,
    output: *mut PtxBuffer,
) -> i32 {
    guard(host, "apply", || {
        let aug = &*(inst as *const T);
        let (ib, ob) = (&*input, &*output);
        let (len, vocab_size) = token_shape(ib, T::NAME)?;
        let (olen, ovocab) = token_shape(ob, T::NAME)?;
        if olen != len || ovocab != vocab_size {
            return Err(Error::msg(format!(
                "{}: output buffer [{olen}, {ovocab}] differs from input [{len}, {vocab_size}]",
                T::NAME
            )));
        }
        if ib.data.is_null() || ob.data.is_null() {
            return Err(Error::msg(format!("{}: null token buffer", T::NAME)));
        }
        let input = TokenSeq {
            ids: std::slice::from_raw_parts(ib.data as *const u32, len),
            vocab_size,
        };
        let out = std::slice::from_raw_parts_mut(ob.data as *mut u32, len);
        let mut rng = Rng::new(seed);
        aug.apply(&mut rng, input, out)
    })
}

unsafe extern "C" fn tok_destroy<T: TokenAugmentation>(inst: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(inst as *mut T))));
}

/// The ABI table entry for token augmentation `T`.
pub fn token_augment_entry<T: TokenAugmentation>() -> PtxAugmentEntry {
    PtxAugmentEntry {
        name: PtxStr::from_static(T::NAME),
        summary: PtxStr::from_static(T::SUMMARY),
        params_doc: PtxStr::from_static(T::PARAMS_DOC),
        modality: MODALITY_TOKENS,
        create: tok_create::<T>,
        output_shape: tok_output_shape::<T>,
        apply: tok_apply::<T>,
        destroy: tok_destroy::<T>,
    }
}

// ------------------------------------------------------------------------------ the entry

/// Owns the tables that [`PtxPluginInfo`] points into. Lives in a `static` of the plugin.
pub struct InfoHolder {
    _objectives: Box<[PtxObjectiveEntry]>,
    _augmentations: Box<[PtxAugmentEntry]>,
    info: PtxPluginInfo,
}

// SAFETY: the holder is immutable after construction and only holds pointers to its own
// boxed tables and to 'static strings.
unsafe impl Sync for InfoHolder {}
unsafe impl Send for InfoHolder {}

impl InfoHolder {
    pub fn new(
        name: &'static str,
        version: &'static str,
        objectives: Vec<PtxObjectiveEntry>,
        augmentations: Vec<PtxAugmentEntry>,
    ) -> Self {
        let objectives = objectives.into_boxed_slice();
        let augmentations = augmentations.into_boxed_slice();
        let info = PtxPluginInfo {
            abi_version: ABI_VERSION,
            struct_size: std::mem::size_of::<PtxPluginInfo>() as u32,
            name: PtxStr::from_static(name),
            version: PtxStr::from_static(version),
            sdk_version: PtxStr::from_static(crate::SDK_VERSION),
            objectives: objectives.as_ptr(),
            n_objectives: objectives.len(),
            augmentations: augmentations.as_ptr(),
            n_augmentations: augmentations.len(),
        };
        InfoHolder {
            _objectives: objectives,
            _augmentations: augmentations,
            info,
        }
    }

    pub fn info(&self) -> *const PtxPluginInfo {
        &self.info
    }
}

/// Build the entry's info once; a panic while building yields a null pointer (the host reports
/// "the plugin's entry function failed").
pub fn entry_guard(build: impl FnOnce() -> *const PtxPluginInfo) -> *const PtxPluginInfo {
    install_panic_hook();
    catch_unwind(AssertUnwindSafe(build)).unwrap_or(std::ptr::null())
}

/// Export a plugin library: its name, objectives and augmentations (image augmentations, and
/// optionally token augmentations for text).
///
/// ```text
/// pretext_plugin::export_plugin! {
///     name: "my-plugin",
///     objectives: [MyLoss],
///     augmentations: [],
///     token_augmentations: [MyTokenNoise], // optional
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        objectives: [$($obj:ty),* $(,)?],
        augmentations: [$($aug:ty),* $(,)?] $(,)?
    ) => {
        $crate::export_plugin! {
            name: $name,
            objectives: [$($obj),*],
            augmentations: [$($aug),*],
            token_augmentations: [],
        }
    };
    (
        name: $name:expr,
        objectives: [$($obj:ty),* $(,)?],
        augmentations: [$($aug:ty),* $(,)?],
        token_augmentations: [$($tok:ty),* $(,)?] $(,)?
    ) => {
        /// The plugin entry point (pretext plugin ABI).
        #[no_mangle]
        pub extern "C" fn pretext_plugin_entry() -> *const $crate::abi::PtxPluginInfo {
            static INFO: ::std::sync::OnceLock<$crate::__private::InfoHolder> =
                ::std::sync::OnceLock::new();
            $crate::__private::entry_guard(|| {
                INFO.get_or_init(|| {
                    $crate::__private::InfoHolder::new(
                        $name,
                        env!("CARGO_PKG_VERSION"),
                        vec![$($crate::__private::objective_entry::<$obj>()),*],
                        {
                            let mut augs: Vec<$crate::abi::PtxAugmentEntry> =
                                vec![$($crate::__private::augment_entry::<$aug>()),*];
                            augs.extend([$($crate::__private::token_augment_entry::<$tok>()),*]);
                            augs
                        },
                    )
                })
                .info()
            })
        }
    };
}
