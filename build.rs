//! Passes what `nginx-sys` learned about the nginx we build against (its OS and
//! feature flags) on to rustc as `ngx_os`/`ngx_feature` cfgs, the way the `ngx`
//! crate itself is configured, so `#[cfg(ngx_feature = "...")]` works here too.
//! This needs `nginx-sys` as a direct dependency (cargo only exports `links`
//! metadata to direct dependents).

fn main() {
    for (cfg, values_var, value_var) in [
        (
            "ngx_feature",
            "DEP_NGINX_FEATURES_CHECK",
            "DEP_NGINX_FEATURES",
        ),
        ("ngx_os", "DEP_NGINX_OS_CHECK", "DEP_NGINX_OS"),
    ] {
        println!("cargo::rerun-if-env-changed={values_var}");
        println!("cargo::rerun-if-env-changed={value_var}");
        let allowed = std::env::var(values_var).unwrap_or_else(|_| "any()".into());
        println!("cargo::rustc-check-cfg=cfg({cfg}, values({allowed}))");
        if let Ok(values) = std::env::var(value_var) {
            for value in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                println!("cargo::rustc-cfg={cfg}=\"{value}\"");
            }
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
}
