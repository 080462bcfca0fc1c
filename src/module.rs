//! Registration: the directive table, the module context and the exported
//! `ngx_http_ticket_module`, in the order nginx's own modules use, then the
//! process hooks.

use core::ffi::{c_char, c_void};
use core::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
    NGX_CONF_1MORE, NGX_CONF_ANY, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_HTTP_LOC_CONF,
    NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_MODULE,
    NGX_HTTP_SRV_CONF,
};
use ngx::core::Status;
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_string;

use crate::conf::{LocConf, MainConf};
use crate::directives;

pub struct TicketModule;

impl HttpModule for TicketModule {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while it loads
        // the module, before any handler runs.
        unsafe { &*ptr::addr_of!(ngx_http_ticket_module) }
    }

    unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
        directives::check_zones(cf, conf)
    }
}

// SAFETY: the confs nginx keeps for this module are created by the
// `create_*_conf` callbacks below with exactly these types.
unsafe impl HttpModuleMainConf for TicketModule {
    type MainConf = MainConf;
}

// SAFETY: as above.
unsafe impl HttpModuleLocationConf for TicketModule {
    type LocationConf = LocConf;
}

const LOC: u32 = NGX_HTTP_LOC_CONF;
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

static mut NGX_HTTP_TICKET_COMMANDS: [ngx_command_t; 7] = [
    ngx_command_t {
        name: ngx_string!("ticket_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(directives::ticket_zone),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ticket_counter"),
        type_: (LOC | NGX_CONF_ANY) as ngx_uint_t,
        set: Some(directives::ticket_counter),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ticket_variable"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(directives::ticket_variable),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ticket_status"),
        type_: (LOC | NGX_CONF_ANY) as ngx_uint_t,
        set: Some(directives::ticket_status),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ticket_admin"),
        type_: (LOC | NGX_CONF_NOARGS | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(directives::ticket_admin),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ticket_log_level"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(directives::ticket_log_level),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

static NGX_HTTP_TICKET_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: Some(TicketModule::create_main_conf),
    init_main_conf: Some(TicketModule::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(TicketModule::create_loc_conf),
    merge_loc_conf: Some(TicketModule::merge_loc_conf),
};

/// Once a (re)loaded configuration is committed: finish moving the counters
/// of resized zones out of the previous cycle.
extern "C" fn ticket_init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_module with the new, committed cycle.
    let cycle = unsafe { &*cycle };
    if let Some(main) = TicketModule::main_conf(cycle) {
        for &zone in &main.zones {
            // SAFETY: zones live in the cycle's pool.
            if let Some(zone) = unsafe { zone.as_mut() } {
                crate::zone_init::carry_over(zone, cycle.log);
            }
        }
    }
    Status::NGX_OK.into()
}

/// A worker starts: its timers and per-process state.
extern "C" fn ticket_init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls init_process with the running cycle.
    let cycle = unsafe { &*cycle };
    crate::wait::start_worker(cycle, TicketModule::module().ctx_index);
    if let Some(main) = TicketModule::main_conf(cycle) {
        crate::sweep::start_worker(main, cycle);
        crate::redis::start_worker(main, cycle);
    }
    Status::NGX_OK.into()
}

/// A clean stop: durable zones record their exact counts. Runs in the
/// master once every worker has exited.
extern "C" fn ticket_exit_master(cycle: *mut ngx_cycle_t) {
    // SAFETY: nginx calls exit_master with its current cycle.
    let cycle = unsafe { &*cycle };
    if let Some(main) = TicketModule::main_conf(cycle) {
        for zone in main.zones() {
            crate::durable::close(zone, cycle);
        }
    }
}

/// A worker exits. Without a master (`master_process off`) the single
/// process is also the last one: it records the exact counts itself.
extern "C" fn ticket_exit_process(cycle: *mut ngx_cycle_t) {
    crate::redis::stop_worker();
    crate::wait::stop_worker();
    crate::durable::stop_worker();
    crate::sweep::stop_worker();
    crate::take::stop_worker();
    crate::http::admin::stop_worker();
    if crate::process::is_single() {
        ticket_exit_master(cycle);
    }
}

// `load_module` looks up these tables in the shared object.
ngx::ngx_modules!(ngx_http_ticket_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_ticket_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(NGX_HTTP_TICKET_MODULE_CTX) as _,
    // SAFETY: taking the address of a static; nginx reads the table.
    commands: unsafe { ptr::addr_of_mut!(NGX_HTTP_TICKET_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    init_module: Some(ticket_init_module),
    init_process: Some(ticket_init_process),
    exit_process: Some(ticket_exit_process),
    exit_master: Some(ticket_exit_master),
    ..ngx_module_t::default()
};
