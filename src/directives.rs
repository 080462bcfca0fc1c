//! The directives: nginx configuration in, typed configuration out.
//!
//! Argument parsing and its error messages live in [`crate::config`]; this
//! file only moves words out of `ngx_conf_t`, declares shared zones and wires
//! handlers. Zone references (`zone=NAME`) are resolved at the end of the
//! `http` block, so a zone may be declared after the location that uses it.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_str_t, NGX_LOG_EMERG,
};
use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use crate::config::{self, ConfError, CounterArgs, Format, StatusFormat};
use crate::durable::Durable;
use crate::module::{ngx_http_ticket_module, TicketModule};
use crate::zone::ZoneHeader;

/// One `ticket_zone` (or the default zone), owned by the cycle's pool.
pub struct TicketZone {
    pub name: String,
    pub size: usize,
    pub shm_zone: *mut ngx_shm_zone_t,
    /// Set by the zone's init callback once the shared memory exists.
    pub header: *const ZoneHeader,
    /// The previous cycle's zone of this name, when a reload resized it.
    pub carry_from: *const ZoneHeader,
    /// `state=`: the zone's counters survive restarts in this file.
    pub durable: Option<Durable>,
    /// The cycle this zone belongs to (the global `ngx_cycle` is still the
    /// previous one while zones are initialised).
    pub cycle: *mut nginx_sys::ngx_cycle_t,
}

impl TicketZone {
    pub fn header(&self) -> Option<&ZoneHeader> {
        // SAFETY: set by the init callback to the zone's shared block, which
        // lives as long as this cycle.
        unsafe { self.header.as_ref() }
    }
}

/// `ticket_counter`'s settings for one location.
pub struct CounterConf {
    pub zone: *mut TicketZone,
    /// `key=`, compiled; null for the zone's default counter.
    pub key: *mut ngx_http_complex_value_t,
    pub start: u64,
    pub max: Option<u64>,
    pub batch: Option<u64>,
    pub format: Format,
    pub width: usize,
}

impl CounterConf {
    pub fn zone(&self) -> Option<&TicketZone> {
        // SAFETY: resolved at the end of the http block to a zone allocated
        // from the cycle's pool.
        unsafe { self.zone.as_ref() }
    }
}

/// `ticket_status`'s settings for one location.
pub struct StatusConf {
    /// Null: every zone.
    pub zone: *mut TicketZone,
    pub format: StatusFormat,
}

#[derive(Default)]
pub struct MainConf {
    pub zones: Vec<*mut TicketZone>,
    pending: Vec<ZoneRef>,
}

impl MainConf {
    pub fn zones(&self) -> impl Iterator<Item = &TicketZone> {
        // SAFETY: zones are allocated from the cycle's pool and never freed
        // before the cycle.
        self.zones.iter().filter_map(|z| unsafe { z.as_ref() })
    }

    fn find(&self, name: &str) -> Option<*mut TicketZone> {
        self.zones()
            .position(|z| z.name == name)
            .map(|i| self.zones[i])
    }
}

#[derive(Default)]
pub struct LocConf {
    pub counter: Option<CounterConf>,
    pub status: Option<StatusConf>,
}

/// A `zone=NAME` waiting for the end of the http block.
struct ZoneRef {
    name: String,
    target: *mut *mut TicketZone,
    directive: &'static str,
    file: String,
    line: usize,
}

/// The words of the directive being parsed, after its name, as strings. They
/// live in the configuration pool, not in `cf`, hence the free lifetime.
fn words<'a>(cf: &ngx_conf_t) -> Result<Vec<&'a str>, ConfError> {
    // SAFETY: nginx fills `cf.args` with the directive's words, as ngx_str_t
    // whose bytes are allocated from the cycle's pool.
    let args: &'a [ngx_str_t] = unsafe { (*cf.args).as_slice() };
    args.iter()
        .skip(1)
        .map(|word| {
            word.to_str()
                .map_err(|_| ConfError(format!("invalid value \"{word}\"")))
        })
        .collect()
}

fn conf_error(cf: *mut ngx_conf_t, err: ConfError) -> *mut c_char {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{err}");
    NGX_CONF_ERROR
}

/// Where the directive being parsed is, for errors reported later.
fn position(cf: &ngx_conf_t) -> (String, usize) {
    // SAFETY: `conf_file` is valid while a directive is being parsed.
    match unsafe { cf.conf_file.as_ref() } {
        Some(file) => (file.file.name.to_string(), file.line),
        None => (String::new(), 0),
    }
}

fn pool(cf: &ngx_conf_t) -> Pool {
    // SAFETY: the configuration pool lives as long as the cycle.
    unsafe { Pool::from_ngx_pool(cf.pool) }
}

/// Declares a zone: its shared memory and its init callback.
fn declare_zone(
    cf: &mut ngx_conf_t,
    main: &mut MainConf,
    name: ngx_str_t,
    size: usize,
    durable: Option<Durable>,
) -> Result<*mut TicketZone, ()> {
    let zone = pool(cf).allocate(TicketZone {
        name: name.to_string(),
        size,
        shm_zone: ptr::null_mut(),
        header: ptr::null(),
        carry_from: ptr::null(),
        durable,
        cycle: cf.cycle,
    });
    if zone.is_null() {
        return Err(());
    }
    let mut shm_name = name;
    // SAFETY: `cf` is the configuration being parsed; the tag is our module,
    // so nginx refuses the name if another module declared it.
    let shm_zone = unsafe {
        ngx_shared_memory_add(
            cf,
            &mut shm_name,
            size,
            ptr::addr_of_mut!(ngx_http_ticket_module).cast(),
        )
    };
    // SAFETY: null or a zone entry in the cycle's list.
    let Some(shm) = (unsafe { shm_zone.as_mut() }) else {
        return Err(()); // nginx has logged why
    };
    shm.init = Some(crate::shm::ticket_zone_init);
    shm.data = zone.cast();
    // SAFETY: just allocated above.
    unsafe { (*zone).shm_zone = shm_zone };
    main.zones.push(zone);
    Ok(zone)
}

/// `ticket_zone NAME:SIZE [state=PATH] [reserve=N];`
pub extern "C" fn ticket_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls directive handlers with a valid `cf` and, for
    // NGX_HTTP_MAIN_CONF_OFFSET, this module's main conf.
    let (cf_ref, main) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    let words = match words(cf_ref) {
        Ok(words) => words,
        Err(err) => return conf_error(cf, err),
    };
    let args = match config::parse_zone_args(&words) {
        Ok(args) => args,
        Err(err) => return conf_error(cf, err),
    };
    if main.find(args.name).is_some() {
        return conf_error(
            cf,
            ConfError(format!(
                "duplicate zone \"{}\" in \"ticket_zone\" directive",
                args.name
            )),
        );
    }
    let durable = match args.state {
        Some(path) => match Durable::configure(cf_ref, path, args.reserve) {
            Ok(durable) => Some(durable),
            Err(err) => return conf_error(cf, err),
        },
        None => None,
    };
    // The name must outlive parsing: point into the pool-allocated word.
    // SAFETY: word 1 exists (NGX_CONF_1MORE) and starts with the name.
    let name = unsafe {
        let word = (*cf_ref.args).as_slice::<ngx_str_t>()[1];
        ngx_str_t {
            len: args.name.len(),
            data: word.data,
        }
    };
    match declare_zone(cf_ref, main, name, args.size, durable) {
        Ok(_) => NGX_CONF_OK,
        Err(()) => NGX_CONF_ERROR,
    }
}

/// Compiles `key=VALUE` (which may hold variables).
fn compile_key(cf: &mut ngx_conf_t, key: &str) -> Result<*mut ngx_http_complex_value_t, ()> {
    let pool = pool(cf);
    let cv = pool.calloc_type::<ngx_http_complex_value_t>();
    if cv.is_null() {
        return Err(());
    }
    // Copy: the compiled value keeps pointers into its source text.
    // SAFETY: the pool outlives the configuration.
    let Some(mut value) = (unsafe { ngx_str_t::from_bytes(cf.pool, key.as_bytes()) }) else {
        return Err(());
    };
    // SAFETY: an all-zero ngx_http_compile_complex_value_t is its documented
    // initial state; nginx fills `cv`.
    let rc = unsafe {
        let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = &mut value;
        ccv.complex_value = cv;
        ngx_http_compile_complex_value(&mut ccv)
    };
    if rc != nginx_sys::NGX_OK as nginx_sys::ngx_int_t {
        return Err(());
    }
    Ok(cv)
}

/// Queues `zone=NAME` (or the default zone) for resolution.
fn refer_to_zone(
    cf: &ngx_conf_t,
    name: Option<&str>,
    target: *mut *mut TicketZone,
    directive: &'static str,
) {
    let Some(main) = TicketModule::main_conf_mut(cf) else {
        return;
    };
    let (file, line) = position(cf);
    main.pending.push(ZoneRef {
        name: name.unwrap_or(config::DEFAULT_ZONE_NAME).to_string(),
        target,
        directive,
        file,
        line,
    });
}

fn counter_conf(cf: &mut ngx_conf_t, args: &CounterArgs) -> Result<CounterConf, ()> {
    let key = match args.key {
        Some(key) => compile_key(cf, key)?,
        None => ptr::null_mut(),
    };
    Ok(CounterConf {
        zone: ptr::null_mut(),
        key,
        start: args.start,
        max: args.max,
        batch: args.batch,
        format: args.format,
        width: args.width,
    })
}

/// Makes the location answer with `handler`.
fn set_content_handler(cf: &ngx_conf_t, handler: nginx_sys::ngx_http_handler_pt) {
    if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) {
        clcf.handler = handler;
    }
}

/// `ticket_counter [zone=NAME] [key=VALUE] [start=N] [max=N] [batch=N]
/// [format=text|json] [width=N];`
pub extern "C" fn ticket_counter(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls directive handlers with a valid `cf` and, for
    // NGX_HTTP_LOC_CONF_OFFSET, this module's location conf.
    let (cf_ref, loc) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
    if loc.counter.is_some() || loc.status.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let words = match words(cf_ref) {
        Ok(words) => words,
        Err(err) => return conf_error(cf, err),
    };
    let args = match config::parse_counter_args(&words) {
        Ok(args) => args,
        Err(err) => return conf_error(cf, err),
    };
    let Ok(counter) = counter_conf(cf_ref, &args) else {
        return NGX_CONF_ERROR;
    };
    let counter = loc.counter.insert(counter);
    refer_to_zone(cf_ref, args.zone, &mut counter.zone, "ticket_counter");
    set_content_handler(cf_ref, Some(crate::handler::ticket_counter_handler));
    NGX_CONF_OK
}

/// `ticket_status [zone=NAME] [format=json|prometheus];`
pub extern "C" fn ticket_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as in `ticket_counter`.
    let (cf_ref, loc) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
    if loc.counter.is_some() || loc.status.is_some() {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let words = match words(cf_ref) {
        Ok(words) => words,
        Err(err) => return conf_error(cf, err),
    };
    let args = match config::parse_status_args(&words) {
        Ok(args) => args,
        Err(err) => return conf_error(cf, err),
    };
    let status = loc.status.insert(StatusConf {
        zone: ptr::null_mut(),
        format: args.format,
    });
    if args.zone.is_some() {
        refer_to_zone(cf_ref, args.zone, &mut status.zone, "ticket_status");
    }
    set_content_handler(cf_ref, Some(crate::handler::ticket_status_handler));
    NGX_CONF_OK
}

/// `ticket_variable $NAME zone=NAME [key=VALUE] [start=N] [max=N];`
pub extern "C" fn ticket_variable(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls directive handlers with a valid `cf`.
    let cf_ref = unsafe { &mut *cf };
    let words = match words(cf_ref) {
        Ok(words) => words,
        Err(err) => return conf_error(cf, err),
    };
    let (name, args) = match config::parse_variable_args(&words) {
        Ok(parsed) => parsed,
        Err(err) => return conf_error(cf, err),
    };
    let Ok(counter) = counter_conf(cf_ref, &args) else {
        return NGX_CONF_ERROR;
    };
    let counter = pool(cf_ref).allocate(counter);
    if counter.is_null() {
        return NGX_CONF_ERROR;
    }
    // SAFETY: just allocated from the cycle's pool.
    let target = unsafe { &mut (*counter).zone };
    refer_to_zone(cf_ref, args.zone, target, "ticket_variable");
    match crate::handler::add_ticket_variable(cf_ref, name, counter) {
        Ok(()) => NGX_CONF_OK,
        Err(()) => NGX_CONF_ERROR,
    }
}

/// At the end of the http block: points every `zone=` at its zone, declaring
/// the default zone if something uses it and the configuration did not.
pub unsafe extern "C" fn resolve_zones(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf and a valid `cf`.
    let (cf_ref, main) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
    let pending = core::mem::take(&mut main.pending);
    for reference in &pending {
        let zone = match main.find(&reference.name) {
            Some(zone) => zone,
            None if reference.name == config::DEFAULT_ZONE_NAME => {
                let name = ngx_str_t {
                    len: config::DEFAULT_ZONE_NAME.len(),
                    data: config::DEFAULT_ZONE_NAME.as_ptr().cast_mut(),
                };
                match declare_zone(cf_ref, main, name, config::DEFAULT_ZONE_SIZE, None) {
                    Ok(zone) => zone,
                    Err(()) => return NGX_CONF_ERROR,
                }
            }
            None => {
                ngx::ngx_log_error!(
                    NGX_LOG_EMERG,
                    cf_ref.log,
                    "unknown zone \"{}\" in \"{}\" directive in {}:{}",
                    reference.name,
                    reference.directive,
                    reference.file,
                    reference.line
                );
                return NGX_CONF_ERROR;
            }
        };
        // SAFETY: `target` points into a conf allocated from the cycle's pool.
        unsafe { *reference.target = zone };
    }
    NGX_CONF_OK
}
