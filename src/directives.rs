//! The directives: nginx configuration in, typed configuration out.
//!
//! Argument parsing and its error messages live in [`crate::core::config`];
//! this file only moves words out of `ngx_conf_t`, declares shared zones and
//! wires handlers. A `zone=NAME` adds the zone's shared memory with size 0,
//! as limit_req does, so a zone may be declared after the location that uses
//! it; the end of the `http` block checks every named zone was declared.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_shared_memory_add, ngx_str_t, ngx_uint_t, NGX_LOG_EMERG,
};
use ngx::core::{Pool, Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use crate::conf::{
    AdminConf, CounterConf, DurableConf, LocConf, MainConf, RedisConf, StatusConf, ZoneConf,
    ZoneUse, UNSET_LEVEL,
};
use crate::core::config::{self, ConfError, CounterArgs, RedisArgs, REDIS_MAX_TICKET};
use crate::core::redis::keys::ZoneKeys;
use crate::core::state::file_identity;
use crate::core::table::KEY_MAX;
use crate::module::{ngx_http_ticket_module, TicketModule};

/// The words of the directive being parsed, after its name, as strings. They
/// live in the configuration pool, not in `cf`, hence the free lifetime.
fn words<'a>(cf: &ngx_conf_t) -> Result<Vec<&'a str>, ConfError> {
    // SAFETY: nginx fills `cf.args` with the directive's words, as ngx_str_t
    // whose bytes are allocated from the cycle's pool.
    let args: &'a [ngx_str_t] = unsafe { (*cf.args).as_slice() };
    let name = args.first().map(|w| w.to_string()).unwrap_or_default();
    args.iter()
        .skip(1)
        .map(|word| {
            word.to_str()
                .map_err(|_| ConfError(format!("invalid value \"{word}\" in \"{name}\" directive")))
        })
        .collect()
}

fn conf_error(cf: *mut ngx_conf_t, err: ConfError) -> *mut c_char {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{err}");
    NGX_CONF_ERROR
}

/// Where the directive being parsed is, for errors reported later.
fn position(cf: &ngx_conf_t) -> String {
    // SAFETY: `conf_file` is valid while a directive is being parsed.
    match unsafe { cf.conf_file.as_ref() } {
        Some(file) => format!("{}:{}", file.file.name, file.line),
        None => String::new(),
    }
}

fn pool(cf: &ngx_conf_t) -> Pool {
    // SAFETY: the configuration pool lives as long as the cycle.
    unsafe { Pool::from_ngx_pool(cf.pool) }
}

/// The zone named `name`: adds its shared memory (size 0 for a reference,
/// as limit_req does) and, the first time, its configuration record.
fn zone_entry(cf: &mut ngx_conf_t, name: &str, size: usize) -> Result<*mut ZoneConf, ()> {
    // SAFETY: the name must outlive the configuration: copied to its pool.
    let Some(mut shm_name) = (unsafe { ngx_str_t::from_bytes(cf.pool, name.as_bytes()) }) else {
        return Err(());
    };
    // SAFETY: `cf` is the configuration being parsed; the tag is our module,
    // so nginx refuses the name if another module declared it, and a size
    // that conflicts with an earlier declaration.
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
    if shm.data.is_null() {
        let zone = pool(cf).allocate(ZoneConf::new(name.to_string(), cf.cycle));
        if zone.is_null() {
            return Err(());
        }
        // SAFETY: just allocated from the cycle's pool.
        unsafe { (*zone).shm_zone = shm_zone };
        shm.init = Some(crate::zone_init::ticket_zone_init);
        shm.data = zone.cast();
        if let Some(main) = TicketModule::main_conf_mut(cf) {
            main.zones.push(zone);
        }
    }
    let zone = shm.data.cast::<ZoneConf>();
    if size > 0 {
        // SAFETY: `data` is always our ZoneConf (the tag matched).
        unsafe { (*zone).size = size };
    }
    Ok(zone)
}

/// `zone=NAME` (or the default zone) of a directive.
fn refer_to_zone(
    cf: &mut ngx_conf_t,
    name: Option<&str>,
    directive: &'static str,
) -> Result<*mut ZoneConf, ()> {
    let zone = zone_entry(cf, name.unwrap_or(config::DEFAULT_ZONE_NAME), 0)?;
    // SAFETY: a zone record from the cycle's pool.
    let record = unsafe { &mut *zone };
    if record.first_use.is_none() {
        record.first_use = Some((position(cf), directive));
    }
    Ok(zone)
}

/// `ticket_zone NAME:SIZE [state=PATH] [reserve=N] [idle=TIME];`
pub extern "C" fn ticket_zone(
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
    let args = match config::parse_zone_args(&words) {
        Ok(args) => args,
        Err(err) => return conf_error(cf, err),
    };
    let declared = TicketModule::main_conf(cf_ref)
        .is_some_and(|main| main.zones().any(|z| z.name == args.name && z.size > 0));
    if declared {
        return conf_error(
            cf,
            ConfError(format!(
                "duplicate zone \"{}\" in \"ticket_zone\" directive",
                args.name
            )),
        );
    }
    let durable = match args.state {
        Some(path) => match crate::durable::configure(cf_ref, path, args.reserve) {
            Ok(durable) => Some(durable),
            Err(err) => return conf_error(cf, err),
        },
        None => None,
    };
    let redis = match args.redis {
        Some(redis) => match redis_conf(redis, args.name) {
            Ok(redis) => Some(redis),
            Err(err) => return conf_error(cf, err),
        },
        None => None,
    };
    let Ok(zone) = zone_entry(cf_ref, args.name, args.size) else {
        return NGX_CONF_ERROR;
    };
    // SAFETY: a zone record from the cycle's pool.
    let zone = unsafe { &mut *zone };
    zone.durable = durable;
    zone.idle = args.idle;
    zone.redis = redis;
    NGX_CONF_OK
}

/// Resolves a Redis zone's host now, as nginx resolves upstream servers:
/// a name that does not resolve stops `nginx -t`.
fn redis_conf(args: RedisArgs, zone: &str) -> Result<RedisConf, ConfError> {
    use std::net::ToSocketAddrs;
    let url = &args.url;
    let addr = match url.ip_addr() {
        Some(ip) => std::net::SocketAddr::new(ip, url.port),
        None => (url.host.as_str(), url.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                ConfError(format!(
                    "host not found in redis URL \"{}\" in \"ticket_zone\" directive",
                    url.redacted()
                ))
            })?,
    };
    let keys = ZoneKeys::new(&args.prefix, zone).ok_or_else(|| {
        ConfError(format!(
            "invalid zone name \"{zone}\" for \"redis=\" in \"ticket_zone\" directive"
        ))
    })?;
    Ok(RedisConf { args, addr, keys })
}

/// Compiles `key=VALUE` (which may hold variables); a key without variables
/// is checked now.
fn compile_key(
    cf: &mut ngx_conf_t,
    key: &str,
    directive: &str,
) -> Result<*mut ngx_http_complex_value_t, ConfError> {
    let oom = || ConfError("out of memory".into());
    let cv = pool(cf).calloc_type::<ngx_http_complex_value_t>();
    if cv.is_null() {
        return Err(oom());
    }
    // Copy: the compiled value keeps pointers into its source text.
    // SAFETY: the pool outlives the configuration.
    let mut value = unsafe { ngx_str_t::from_bytes(cf.pool, key.as_bytes()) }.ok_or_else(oom)?;
    // SAFETY: an all-zero ngx_http_compile_complex_value_t is its documented
    // initial state; nginx fills `cv`.
    let rc = unsafe {
        let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
        ccv.cf = cf;
        ccv.value = &mut value;
        ccv.complex_value = cv;
        ngx_http_compile_complex_value(&mut ccv)
    };
    if rc != Status::NGX_OK.0 {
        return Err(ConfError(format!(
            "invalid value \"key={key}\" in \"{directive}\" directive"
        )));
    }
    // SAFETY: compiled just above.
    let fixed = unsafe { (*cv).lengths.is_null() };
    if fixed && key.len() > KEY_MAX {
        return Err(ConfError(format!(
            "invalid value \"key={key}\" in \"{directive}\" directive, \
             a key is at most {KEY_MAX} bytes"
        )));
    }
    Ok(cv)
}

fn counter_conf(
    cf: &mut ngx_conf_t,
    args: &CounterArgs,
    directive: &'static str,
) -> Result<CounterConf, ConfError> {
    let key = match args.key {
        Some(key) => compile_key(cf, key, directive)?,
        None => ptr::null_mut(),
    };
    let zone = refer_to_zone(cf, args.zone, directive)
        .map_err(|()| ConfError(format!("invalid zone in \"{directive}\" directive")))?;
    let place = position(cf);
    // SAFETY: a zone record from the cycle's pool.
    unsafe { &mut *zone }.uses.push(ZoneUse {
        start: args.start,
        max: args.max,
        variable: directive == "ticket_variable",
        place,
        directive,
    });
    Ok(CounterConf {
        zone,
        key,
        start: args.start,
        max: args.max,
        batch: args.batch,
        format: args.format,
        width: args.width,
        create: args.create,
    })
}

/// Makes the location answer with `handler`.
fn set_content_handler(cf: &ngx_conf_t, handler: nginx_sys::ngx_http_handler_pt) {
    if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) {
        clcf.handler = handler;
    }
}

/// The location conf and words of a content directive, or the error.
fn content_directive<'a>(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
) -> Result<(&'a mut ngx_conf_t, &'a mut LocConf, Vec<&'a str>), *mut c_char> {
    // SAFETY: nginx calls directive handlers with a valid `cf` and, for
    // NGX_HTTP_LOC_CONF_OFFSET, this module's location conf.
    let (cf_ref, loc) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
    if loc.has_handler() {
        return Err(c"is duplicate".as_ptr().cast_mut());
    }
    let words = words(cf_ref).map_err(|err| conf_error(cf, err))?;
    Ok((cf_ref, loc, words))
}

/// `ticket_counter [zone=NAME] [key=VALUE] [start=N] [max=N] [batch=N]
/// [format=text|json] [width=N] [create=on|off];`
pub extern "C" fn ticket_counter(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let (cf_ref, loc, words) = match content_directive(cf, conf) {
        Ok(parts) => parts,
        Err(rc) => return rc,
    };
    let args = match config::parse_counter_args(&words) {
        Ok(args) => args,
        Err(err) => return conf_error(cf, err),
    };
    match counter_conf(cf_ref, &args, "ticket_counter") {
        Ok(counter) => loc.counter = Some(counter),
        Err(err) => return conf_error(cf, err),
    }
    set_content_handler(cf_ref, Some(crate::http::counter::ticket_counter_handler));
    NGX_CONF_OK
}

/// `ticket_status [zone=NAME] [format=json|prometheus];`
pub extern "C" fn ticket_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let (cf_ref, loc, words) = match content_directive(cf, conf) {
        Ok(parts) => parts,
        Err(rc) => return rc,
    };
    let args = match config::parse_status_args(&words) {
        Ok(args) => args,
        Err(err) => return conf_error(cf, err),
    };
    let zone = match args.zone {
        Some(name) => match refer_to_zone(cf_ref, Some(name), "ticket_status") {
            Ok(zone) => zone,
            Err(()) => return NGX_CONF_ERROR,
        },
        None => ptr::null_mut(),
    };
    loc.status = Some(StatusConf {
        zone,
        format: args.format,
    });
    set_content_handler(cf_ref, Some(crate::http::status::ticket_status_handler));
    NGX_CONF_OK
}

/// `ticket_admin [zone=NAME];`
pub extern "C" fn ticket_admin(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let (cf_ref, loc, words) = match content_directive(cf, conf) {
        Ok(parts) => parts,
        Err(rc) => return rc,
    };
    let zone = match config::parse_admin_args(&words) {
        Ok(zone) => zone,
        Err(err) => return conf_error(cf, err),
    };
    let Ok(zone) = refer_to_zone(cf_ref, zone, "ticket_admin") else {
        return NGX_CONF_ERROR;
    };
    loc.admin = Some(AdminConf { zone });
    set_content_handler(cf_ref, Some(crate::http::admin::ticket_admin_handler));
    NGX_CONF_OK
}

/// `ticket_log_level info | notice | warn | error;`
pub extern "C" fn ticket_log_level(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: as in `ticket_counter`.
    let (cf_ref, loc) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
    if loc.log_level != UNSET_LEVEL {
        return c"is duplicate".as_ptr().cast_mut();
    }
    let level = match words(cf_ref).and_then(|w| config::parse_log_level(&w)) {
        Ok(level) => level,
        Err(err) => return conf_error(cf, err),
    };
    loc.log_level = level as ngx_uint_t;
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
    let counter = match counter_conf(cf_ref, &args, "ticket_variable") {
        Ok(counter) => pool(cf_ref).allocate(counter),
        Err(err) => return conf_error(cf, err),
    };
    if counter.is_null() {
        return NGX_CONF_ERROR;
    }
    match crate::http::variable::add_ticket_variable(cf_ref, name, counter) {
        Ok(()) => NGX_CONF_OK,
        Err(()) => NGX_CONF_ERROR,
    }
}

/// At the end of the http block: sizes the default zone if something uses
/// it and the configuration did not declare it, and refuses zones that were
/// named but never declared, and two durable zones on one file.
pub fn check_zones(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf and a valid `cf`.
    let (cf_ref, main) = unsafe { (&mut *cf, &*conf.cast::<MainConf>()) };
    let default_unsized = main
        .zones()
        .any(|z| z.name == config::DEFAULT_ZONE_NAME && z.size == 0);
    if default_unsized
        && zone_entry(cf_ref, config::DEFAULT_ZONE_NAME, config::DEFAULT_ZONE_SIZE).is_err()
    {
        return NGX_CONF_ERROR;
    }
    // SAFETY: as above; re-read after zone_entry may have pushed.
    let main = unsafe { &*conf.cast::<MainConf>() };
    let zones: Vec<&ZoneConf> = main.zones().collect();
    for zone in &zones {
        if zone.size == 0 {
            let (place, directive) = zone.first_use.clone().unwrap_or_default();
            ngx::ngx_log_error!(
                NGX_LOG_EMERG,
                cf_ref.log,
                "unknown zone \"{}\" in \"{}\" directive in {}",
                zone.name,
                directive,
                place
            );
            return NGX_CONF_ERROR;
        }
    }
    for zone in &zones {
        let Some(redis) = zone.redis.as_ref() else {
            continue;
        };
        for used in &zone.uses {
            let big = if used.start > REDIS_MAX_TICKET {
                Some(format!("start={}", used.start))
            } else {
                used.max
                    .filter(|&max| max > REDIS_MAX_TICKET)
                    .map(|max| format!("max={max}"))
            };
            let why = match big {
                Some(value) => format!(
                    "invalid value \"{value}\" in \"{}\" directive: zone \"{}\" keeps its \
                     counters in Redis, whose integers end at {REDIS_MAX_TICKET}",
                    used.directive, zone.name
                ),
                None if used.variable && redis.lease().is_none() => format!(
                    "\"ticket_variable\" cannot use zone \"{}\": a variable cannot wait for \
                     Redis; give the zone \"lease=\"",
                    zone.name
                ),
                None => continue,
            };
            ngx::ngx_log_error!(NGX_LOG_EMERG, cf_ref.log, "{why} in {}", used.place);
            return NGX_CONF_ERROR;
        }
    }
    for (i, zone) in zones.iter().enumerate() {
        let Some(redis) = zone.redis.as_ref() else {
            continue;
        };
        // One database of one server: their keys could meet.
        let same_db = |other: &RedisConf| {
            other.addr == redis.addr
                && other.args.url.db == redis.args.url.db
                && other.keys.overlaps(&redis.keys)
        };
        if let Some((other, other_redis)) = zones[..i].iter().find_map(|z| {
            let r = z.redis.as_ref().filter(|r| same_db(r))?;
            Some((z, r))
        }) {
            ngx::ngx_log_error!(
                NGX_LOG_EMERG,
                cf_ref.log,
                "ticket zones \"{}\" and \"{}\" would share Redis keys (\"{}\" and \"{}\" on \
                 one database); give them redis_prefix= values that keep them apart",
                other.name,
                zone.name,
                String::from_utf8_lossy(other_redis.keys.stem()),
                String::from_utf8_lossy(redis.keys.stem())
            );
            return NGX_CONF_ERROR;
        }
    }
    for (i, zone) in zones.iter().enumerate() {
        let Some(path) = zone.durable.as_ref().map(|d| &d.path) else {
            continue;
        };
        // The same file by any path: a symlinked directory, `..`.
        let id = file_identity(path);
        let same =
            |d: &DurableConf| &d.path == path || (id.is_some() && file_identity(&d.path) == id);
        if let Some(other) = zones[..i]
            .iter()
            .find(|z| z.durable.as_ref().is_some_and(same))
        {
            ngx::ngx_log_error!(
                NGX_LOG_EMERG,
                cf_ref.log,
                "ticket zones \"{}\" and \"{}\" use the same state file \"{}\"",
                other.name,
                zone.name,
                path.display()
            );
            return NGX_CONF_ERROR;
        }
    }
    NGX_CONF_OK
}
