use super::*;
use crate::config::file::parse;

const BASE: &str = r#"
[[interfaces]]
port = 0
addresses = ["198.18.0.1/24", "2001:db8:1::1/64"]
[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[neighbors]]
address = "198.18.0.10"
mac = "02:00:00:00:00:0a"
[[services]]
id = "web"
vip = "198.18.0.100"
port = 80
scheduler = "maglev"
[[services.backends]]
id = "web-1"
address = "198.18.0.10"
port = 8080
[[services.backends]]
id = "web-2"
address = "198.18.0.11"
weight = 3
enabled = false
[[services]]
id = "dns6"
protocol = "udp"
vip = "2001:db8:1::53"
port = 53
forwarding = "dr"
"#;

fn check(text: &str) -> Result<Model, Vec<String>> {
    let f = parse(text, []).map_err(|e| vec![e.to_string()])?;
    validate(&f).map_err(|v| v.iter().map(ToString::to_string).collect())
}

/// BASE with `from` replaced by `to`; the replacement must apply.
fn errors_of(from: &str, to: &str) -> Vec<String> {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    check(&BASE.replacen(from, to, 1)).expect_err("must be refused")
}

#[test]
fn a_good_file_becomes_a_typed_model() {
    let m = check(BASE).unwrap();
    assert_eq!(m.interfaces[0].addresses[1].to_string(), "2001:db8:1::1/64");
    assert_eq!(m.routes[0].via, "198.18.0.254".parse::<IpAddr>().unwrap());
    assert_eq!(m.neighbors[0].mac.0, [2, 0, 0, 0, 0, 0x0a]);
    let web = &m.services[0];
    assert_eq!(
        (web.protocol, web.scheduler, web.forwarding),
        (Protocol::Tcp, SchedulerKind::Maglev, ForwardingMode::Nat)
    );
    assert_eq!(web.backends[0].port, 8080);
    assert_eq!(
        web.backends[1].port, 80,
        "a backend's port defaults to the service's"
    );
    assert_eq!(
        (web.backends[1].weight, web.backends[1].enabled),
        (3, false)
    );
    assert_eq!(m.services[1].protocol, Protocol::Udp);
    assert_eq!(
        m.services[1].scheduler,
        SchedulerKind::WeightedLeastConnection,
        "ipvsadm's default"
    );
    assert_eq!(m.api.token, None);
    assert_eq!(m.api.listen.to_string(), "127.0.0.1:9180");
}

#[test]
fn duplicate_service_ids_and_endpoints_are_refused() {
    assert_eq!(
        errors_of("id = \"dns6\"", "id = \"web\""),
        ["services[1].id: duplicate service id \"web\" (also services[0])"]
    );
    let dup = BASE.to_string() + "[[services]]\nid = \"web2\"\nvip = \"198.18.0.100\"\nport = 80\n";
    assert_eq!(
        check(&dup).unwrap_err(),
        ["services[2]: tcp 198.18.0.100 port 80 is already services[0] (\"web\")"]
    );
    // The same VIP and port over another protocol is a different service.
    let udp = BASE.to_string()
        + "[[services]]\nid = \"web-udp\"\nprotocol = \"udp\"\nvip = \"198.18.0.100\"\nport = 80\n";
    assert!(check(&udp).is_ok());
    assert_eq!(
        errors_of("id = \"web-2\"", "id = \"web-1\""),
        [
            "services[0].backends[1].id: duplicate backend id \"web-1\" (also services[0].backends[0])"
        ]
    );
}

#[test]
fn bad_addresses_ports_and_families_name_their_field() {
    assert_eq!(
        errors_of("198.18.0.100", "198.18.0.300"),
        ["services[0].vip: \"198.18.0.300\" is not an IP address"]
    );
    assert_eq!(
        errors_of("port = 80\n", "port = 0\n"),
        [
            "services[0].port: 0 (every port) is for a persistent dr or tun service: set persistence_timeout (ipvsadm refuses a zero port without -p too), or give a port from 1 to 65535"
        ]
    );
    assert_eq!(
        errors_of("port = 8080", "port = 0"),
        ["services[0].backends[0].port: 0 is not a port (1 to 65535)"]
    );
    assert_eq!(
        errors_of("address = \"198.18.0.11\"", "address = \"2001:db8:1::11\""),
        [
            "services[0].backends[1].address: 2001:db8:1::11 is IPv6, the service's vip 198.18.0.100 is IPv4"
        ]
    );
    assert_eq!(
        errors_of("address = \"198.18.0.11\"", "address = \"198.18.0.100\""),
        ["services[0].backends[1].address: 198.18.0.100 is the service's own vip"]
    );
    assert_eq!(
        errors_of("\"198.18.0.1/24\"", "\"198.18.0.1/40\""),
        ["interfaces[0].addresses[0]: prefix length \"40\" is not a number from 0 to 32"]
    );
    assert_eq!(
        errors_of("mac = \"02:00:00:00:00:0a\"", "mac = \"02:00:00\""),
        [
            "neighbors[0].mac: \"02:00:00\" is not a MAC address (six hex pairs, like 02:00:00:00:01:0a)"
        ]
    );
    assert_eq!(
        errors_of("via = \"198.18.0.254\"", "via = \"2001:db8::1\""),
        ["routes[0].via: 2001:db8::1 is IPv6, the prefix 0.0.0.0/0 is IPv4"]
    );
    assert_eq!(
        errors_of("prefix = \"0.0.0.0/0\"", "prefix = \"198.18.5.1/16\""),
        ["routes[0].prefix: 198.18.5.1/16 has host bits set (did you mean 198.18.0.0/16?)"]
    );
}

#[test]
fn unknown_scheduler_and_forwarding_mode_list_the_choices() {
    assert_eq!(
        errors_of("scheduler = \"maglev\"", "scheduler = \"fastest\""),
        [
            "services[0].scheduler: \"fastest\" is not one of rr, wrr, lc, wlc, sed, nq, sh, dh, maglev, mh, fo, ovf, twos"
        ]
    );
    assert_eq!(
        errors_of("forwarding = \"dr\"", "forwarding = \"dsr\""),
        ["services[1].forwarding: \"dsr\" is not one of nat, dr, tun"]
    );
    assert_eq!(
        errors_of("protocol = \"udp\"", "protocol = \"sctp\""),
        ["services[1].protocol: \"sctp\" is not one of tcp, udp"]
    );
}

#[test]
fn dr_and_tun_cannot_change_the_port() {
    let text = BASE.replacen(
        "scheduler = \"maglev\"",
        "scheduler = \"maglev\"\nforwarding = \"tun\"",
        1,
    );
    assert_eq!(
        check(&text).unwrap_err(),
        [
            "services[0].backends[0].port: 8080 differs from the service port 80; tun forwarding cannot change ports (leave it out or use nat)"
        ]
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = BASE
        .replacen("port = 80\n", "port = 0\n", 1)
        .replacen("\"maglev\"", "\"fastest\"", 1)
        .replacen("[dpdk]", "", 1)
        + "[dpdk]\nburst = 0\n[timeouts]\nudp = 0\n";
    let errs = check(&text).unwrap_err();
    assert_eq!(
        errs,
        [
            "dpdk.burst: 0 is not from 1 to 256",
            "timeouts.udp: must be at least 1 second",
            "services[0].port: 0 (every port) is for a persistent dr or tun service: set persistence_timeout (ipvsadm refuses a zero port without -p too), or give a port from 1 to 65535",
            "services[0].scheduler: \"fastest\" is not one of rr, wrr, lc, wlc, sed, nq, sh, dh, maglev, mh, fo, ovf, twos",
        ]
    );
}

#[test]
fn settings_out_of_range_are_refused() {
    let bad = |extra: &str| check(&(BASE.to_string() + extra)).unwrap_err();
    assert_eq!(
        bad("[api]\nlisten = \"localhost\"\n"),
        ["api.listen: \"localhost\" is not an address:port (like 127.0.0.1:9180)"]
    );
    assert_eq!(
        bad("[dpdk]\nrx_desc = 8\n"),
        ["dpdk.rx_desc: 8 is not from 32 to 32768"]
    );
    assert_eq!(
        bad("[dpdk]\nflow_capacity = 4294967295\n"),
        ["dpdk.flow_capacity: 4294967295 is more than 268435456 (per worker, about 82 bytes each)"]
    );
    assert!(check(&(BASE.to_string() + "[dpdk]\nflow_capacity = 268435456\n")).is_ok());
    // The embedded default gives EAL 512 MiB (-m 512): 262144 mbufs of 2368 bytes fit, not 262144 more.
    assert_eq!(
        bad("[dpdk]\neal_args = [\"--no-huge\", \"-m\", \"512\"]\nextra_mbufs = 226719\n"),
        [
            "dpdk.extra_mbufs: 226719 mbufs of about 2368 bytes take 512 MiB, and EAL has 512 MiB (-m 512 in dpdk.eal_args)"
        ]
    );
    assert!(
        check(
            &(BASE.to_string()
                + "[dpdk]\neal_args = [\"--no-huge\", \"-m\", \"512\"]\nextra_mbufs = 200000\n")
        )
        .is_ok()
    );
    assert_eq!(
        bad("[dpdk]\neal_args = [\"--socket-mem=256,256\"]\nextra_mbufs = 67108864\n"),
        [
            "dpdk.extra_mbufs: 67108864 mbufs of about 2368 bytes take 151552 MiB, and EAL has 512 MiB (--socket-mem 256,256 in dpdk.eal_args)"
        ]
    );
    assert_eq!(
        bad("[dpdk]\nextra_mbufs = 67108865\n"),
        ["dpdk.extra_mbufs: 67108865 is more than 67108864"]
    );
    // The API beyond loopback needs a token, or the operator's explicit word.
    assert_eq!(
        bad("[api]\nlisten = \"198.18.0.1:9180\"\n"),
        [
            "api.token: is required when api.listen (198.18.0.1:9180) is not a loopback address: anyone who reaches it could change the services (set api.allow_unauthenticated = true to serve it without one)"
        ]
    );
    for ok in [
        "[api]\nlisten = \"198.18.0.1:9180\"\ntoken = \"s3cret\"\n",
        "[api]\nlisten = \"198.18.0.1:9180\"\nallow_unauthenticated = true\n",
        "[api]\nlisten = \"[::1]:9180\"\n",
    ] {
        assert!(check(&(BASE.to_string() + ok)).is_ok(), "{ok}");
    }
    assert_eq!(
        bad("[dpdk]\nmbuf_data_room = 100\n"),
        [
            "dpdk.mbuf_data_room: 100 is not from 256 to 16384",
            "interfaces[0].mtu: 1500 (+ 18 bytes of Ethernet header) does not fit in dpdk.mbuf_data_room 100"
        ]
    );
    let jumbo = BASE.replacen("port = 0\n", "port = 0\nmtu = 9000\n", 1);
    assert_eq!(
        check(&jumbo).unwrap_err(),
        [
            "interfaces[0].mtu: 9000 (+ 18 bytes of Ethernet header) does not fit in dpdk.mbuf_data_room 2048"
        ]
    );
    assert!(check(&(jumbo + "[dpdk]\nmbuf_data_room = 9216\nextra_mbufs = 4096\n")).is_ok());
    let m = BASE.replacen(
        "scheduler = \"maglev\"",
        "scheduler = \"maglev\"\nmaglev_table_size = 65536",
        1,
    );
    assert_eq!(
        check(&m).unwrap_err(),
        [
            "services[0].maglev_table_size: 65536 is not a prime from the number of backends to 16777213 (Maglev needs M prime; 65537 is the default)"
        ]
    );
    let w = BASE.replacen("weight = 3", "weight = 70000", 1);
    assert_eq!(
        check(&w).unwrap_err(),
        ["services[0].backends[1].weight: 70000 is not from 0 to 65535"]
    );
    let no_itf = BASE.replacen(
        "[[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\", \"2001:db8:1::1/64\"]\n",
        "",
        1,
    );
    assert_eq!(
        check(&no_itf).unwrap_err(),
        ["interfaces: at least one [[interfaces]] entry (a DPDK port) is needed"]
    );
    let two = BASE.to_string() + "[[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\"]\n";
    assert_eq!(
        check(&two).unwrap_err(),
        [
            "interfaces[1].port: port 0 is already interfaces[0]",
            "interfaces[1].addresses[0]: 198.18.0.1 is already interfaces[0].addresses[0]"
        ]
    );
}

#[test]
fn primes_are_primes() {
    assert!(is_prime(65537) && is_prime(251) && is_prime(16_777_213) && is_prime(2));
    assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(65535));
}

#[test]
fn more_services_or_backends_than_the_appliance_holds_are_refused() {
    let service = |i: u32, backends: u32| {
        let mut s = format!(
            "[[services]]\nid = \"s{i}\"\nprotocol = \"udp\"\nvip = \"198.18.{}.{}\"\nport = 53\nscheduler = \"rr\"\n",
            i / 250 + 100,
            i % 250 + 1
        );
        for b in 0..backends {
            s += &format!(
                "[[services.backends]]\nid = \"b{b}\"\naddress = \"198.19.{}.{}\"\n",
                b / 250,
                b % 250 + 1
            );
        }
        s
    };
    let base = "[[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\"]\n";
    let at_limit: String = (0..MAX_SERVICES).map(|i| service(i, 0)).collect();
    assert!(check(&format!("{base}{at_limit}")).is_ok());
    let over = format!("{base}{at_limit}{}", service(MAX_SERVICES, 0));
    assert_eq!(
        check(&over).unwrap_err(),
        vec!["services: 4097 services; the appliance holds at most 4096".to_string()]
    );
    // 17 services of 4096 backends: 69632 > 65536.
    let many: String = (0..17).map(|i| service(i, 4096)).collect();
    assert_eq!(
        check(&format!("{base}{many}")).unwrap_err(),
        vec![
            "services: 69632 backends in all services; the appliance holds at most 65536"
                .to_string()
        ]
    );
}

#[test]
fn addresses_that_cannot_be_a_vip_are_refused() {
    let with_vip = |vip: &str| {
        let text = format!(
            "[[interfaces]]\nport = 0\naddresses = [\"198.18.0.1/24\", \"2001:db8:1::1/64\"]\n[[services]]\nid = \"s\"\nvip = \"{vip}\"\nport = 80\n"
        );
        check(&text)
    };
    for (vip, why) in [
        ("0.0.0.0", "the unspecified address"),
        ("255.255.255.255", "the broadcast address"),
        ("224.0.0.1", "a multicast address"),
        ("127.0.0.1", "a loopback address"),
        ("::", "the unspecified address"),
        ("::1", "the loopback address"),
        ("ff02::1", "a multicast address"),
        (
            "::ffff:198.18.0.100",
            "an IPv4-mapped IPv6 address (write the IPv4 address)",
        ),
    ] {
        assert_eq!(
            with_vip(vip).unwrap_err(),
            [format!("services[0].vip: {vip} is {why}, not a VIP")],
            "{vip}"
        );
    }
    assert_eq!(
        with_vip("198.18.0.1").unwrap_err(),
        ["services[0].vip: 198.18.0.1 is the address of interfaces[0].addresses[0], not a VIP"]
    );
    assert!(with_vip("198.18.0.100").is_ok());
    assert!(with_vip("2001:db8:1::100").is_ok());
}

#[test]
fn a_kernel_interface_needs_a_name_the_kernel_takes_once() {
    let at = "port = 0\n";
    let m = check(&BASE.replacen(at, "port = 0\nkernel_interface = \"l4lb0\"\n", 1)).unwrap();
    assert_eq!(
        m.interfaces[0].kernel,
        Some(KernelInterface {
            name: "l4lb0".into(),
            driver: KernelDriver::Auto
        })
    );
    let m = check(&BASE.replacen(
        at,
        "port = 0\nkernel_interface = \"mgmt.1\"\nkernel_driver = \"tap\"\n",
        1,
    ))
    .unwrap();
    assert_eq!(
        m.interfaces[0].kernel.as_ref().unwrap().driver,
        KernelDriver::Tap
    );
    assert_eq!(check(BASE).unwrap().interfaces[0].kernel, None);
    for (line, error) in [
        (
            "kernel_interface = \"\"",
            "interfaces[0].kernel_interface: \"\" is not 1 to 15 bytes long (the kernel's IFNAMSIZ)",
        ),
        (
            "kernel_interface = \"a-name-too-long-x\"",
            "interfaces[0].kernel_interface: \"a-name-too-long-x\" is not 1 to 15 bytes long (the kernel's IFNAMSIZ)",
        ),
        (
            "kernel_interface = \"eth 0\"",
            "interfaces[0].kernel_interface: \"eth 0\" has a character other than letters, digits, '-', '_' and '.'",
        ),
        (
            "kernel_interface = \"a/b\"",
            "interfaces[0].kernel_interface: \"a/b\" has a character other than letters, digits, '-', '_' and '.'",
        ),
        (
            "kernel_interface = \"..\"",
            "interfaces[0].kernel_interface: \"..\" is not a name the kernel allows",
        ),
        (
            "kernel_interface = \"l4lb0\"\nkernel_driver = \"kni\"",
            "interfaces[0].kernel_driver: \"kni\" is not one of \"auto\", \"tap\", \"virtio_user\"",
        ),
        (
            "kernel_driver = \"tap\"",
            "interfaces[0].kernel_driver: given without kernel_interface (the name of the kernel interface)",
        ),
    ] {
        assert_eq!(
            errors_of(at, &format!("port = 0\n{line}\n")),
            [error],
            "{line}"
        );
    }
    let two = BASE.replacen(at, "port = 0\nkernel_interface = \"l4lb0\"\n", 1)
        + "[[interfaces]]\nport = 1\nkernel_interface = \"l4lb0\"\n";
    assert_eq!(
        check(&two).unwrap_err(),
        ["interfaces[1].kernel_interface: \"l4lb0\" is already interfaces[0].kernel_interface"]
    );
}

#[test]
fn health_checks_on_down_and_the_sorry_backend_are_checked_field_by_field() {
    let at = "scheduler = \"maglev\"\n";
    let m = check(&BASE.replacen(
        at,
        "scheduler = \"maglev\"\non_down = \"inhibit\"\nsorry_backend = { address = \"198.18.0.99\" }\n\
         health_check = { type = \"http\", path = \"/ready\", expect_status = 204, port = 9000, interval_ms = 500, timeout_ms = 200, rise = 1, fall = 2 }\n",
        1,
    ))
    .unwrap();
    let web = &m.services[0];
    assert_eq!(
        web.health,
        HealthCheck {
            kind: CheckKind::Http,
            port: Some(9000),
            path: "/ready".into(),
            expect_status: 204,
            interval: std::time::Duration::from_millis(500),
            timeout: std::time::Duration::from_millis(200),
            rise: 1,
            fall: 2,
        }
    );
    assert_eq!(web.on_down, OnDown::Inhibit);
    assert_eq!(web.sorry, Some(("198.18.0.99".parse().unwrap(), 80)));
    let d = &check(BASE).unwrap().services[0];
    assert_eq!(
        (&d.health, d.on_down, d.sorry),
        (&HealthCheck::default(), OnDown::Remove, None),
        "no checks, remove, no sorry backend by default"
    );
    for (line, error) in [
        (
            "health_check = { type = \"icmp\" }",
            "services[0].health_check.type: \"icmp\" is not tcp, http, udp or none",
        ),
        (
            "health_check = { type = \"http\", path = \"ready\" }",
            "services[0].health_check.path: \"ready\" is not a path (it starts with / and has no spaces or control characters)",
        ),
        (
            "health_check = { type = \"http\", expect_status = 99 }",
            "services[0].health_check.expect_status: 99 is not an HTTP status (100 to 599)",
        ),
        (
            "health_check = { type = \"none\", expect_status = 99 }",
            "services[0].health_check.expect_status: 99 is not an HTTP status (100 to 599)",
        ),
        (
            "health_check = { type = \"tcp\", path = \"x y\" }",
            "services[0].health_check.path: \"x y\" is not a path",
        ),
        (
            "health_check = { type = \"tcp\", port = 0 }",
            "services[0].health_check.port: 0 is not a port (1 to 65535)",
        ),
        (
            "health_check = { type = \"tcp\", interval_ms = 50, timeout_ms = 20 }",
            "services[0].health_check.interval_ms: 50 is not from 100 to 3600000",
        ),
        (
            "health_check = { type = \"tcp\", interval_ms = 1000, timeout_ms = 1500 }",
            "services[0].health_check.timeout_ms: 1500 is not from 10 to interval_ms (1000)",
        ),
        (
            "health_check = { type = \"tcp\", rise = 0 }",
            "services[0].health_check.rise: 0 is not from 1 to 100",
        ),
        (
            "health_check = { type = \"tcp\", fall = 101 }",
            "services[0].health_check.fall: 101 is not from 1 to 100",
        ),
        (
            "health_check = { type = \"tcp\", every = 3 }",
            "services[0].health_check: unknown key `every` (expected one of `type`, `port`, `path`, `expect_status`, `interval_ms`, `timeout_ms`, `rise`, `fall`)",
        ),
        (
            "on_down = \"drain\"",
            "services[0].on_down: \"drain\" is not remove or inhibit",
        ),
        (
            "sorry_backend = { address = \"2001:db8::99\" }",
            "services[0].sorry_backend.address: 2001:db8::99 is IPv6, the service's vip 198.18.0.100 is IPv4",
        ),
        (
            "sorry_backend = { address = \"198.18.0.10\", port = 8080 }",
            "services[0].sorry_backend: 198.18.0.10 port 8080 is backends[0]",
        ),
    ] {
        let errors = errors_of(at, &format!("{at}{line}\n"));
        assert_eq!(errors.len(), 1, "{line}: {errors:?}");
        assert!(errors[0].contains(error), "{line}: {errors:?}");
    }
    // dr cannot send the sorry backend to another port
    let dr = "forwarding = \"dr\"\n";
    let errors = errors_of(
        dr,
        &format!("{dr}sorry_backend = {{ address = \"2001:db8:1::99\", port = 5353 }}\n"),
    );
    assert_eq!(
        errors,
        [
            "services[1].sorry_backend.port: 5353 differs from the service port 53; dr forwarding cannot change ports (leave it out or use nat)"
        ]
    );
}

#[test]
fn scheduler_flags_thresholds_one_packet_and_client_lists_are_checked_field_by_field() {
    let m = check(
        &BASE
            .replacen(
                "scheduler = \"maglev\"\n",
                "scheduler = \"sh\"\nscheduler_flags = [\"sh-port\", \"sh-fallback\"]\n\
                 allow = [\"198.18.0.0/16\", \"198.18.5.7\"]\ndeny = [\"198.18.9.0/24\"]\n",
                1,
            )
            .replacen(
                "port = 8080\n",
                "port = 8080\nupper_threshold = 10\nlower_threshold = 5\n",
                1,
            )
            .replacen(
                "forwarding = \"dr\"\n",
                "forwarding = \"dr\"\none_packet = true\n",
                1,
            ),
    )
    .unwrap();
    let web = &m.services[0];
    assert_eq!(web.scheduler_flags.names(), ["sh-fallback", "sh-port"]);
    assert_eq!(
        web.allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["198.18.0.0/16", "198.18.5.7/32"]
    );
    assert_eq!(web.deny[0].to_string(), "198.18.9.0/24");
    assert_eq!(
        (
            web.backends[0].upper_threshold,
            web.backends[0].lower_threshold
        ),
        (10, 5)
    );
    assert!(m.services[1].one_packet && !web.one_packet);
    assert_eq!(
        "mh".parse::<SchedulerKind>(),
        Ok(SchedulerKind::MaglevIpvs),
        "IPVS's name for Maglev"
    );
    let svc = "scheduler = \"maglev\"\n";
    for (line, error) in [
        (
            "scheduler = \"sh\"\nscheduler_flags = [\"sh-prot\"]\n",
            "services[0].scheduler_flags[0]: \"sh-prot\" is not one of sh-fallback, sh-port, mh-fallback, mh-port",
        ),
        (
            "scheduler = \"rr\"\nscheduler_flags = [\"sh-port\"]\n",
            "services[0].scheduler_flags[0]: sh-port is a flag of the sh scheduler (the scheduler is rr)",
        ),
        (
            "scheduler = \"maglev\"\nscheduler_flags = [\"mh-port\"]\n",
            "services[0].scheduler_flags[0]: mh-port is a flag of the mh scheduler (maglev hashes the whole tuple",
        ),
        (
            "scheduler = \"maglev\"\none_packet = true\n",
            "services[0].one_packet: is for udp services (ipvsadm --ops)",
        ),
        (
            "scheduler = \"maglev\"\nallow = [\"2001:db8::/32\"]\n",
            "services[0].allow[0]: 2001:db8::/32 is IPv6, the service's vip 198.18.0.100 is IPv4",
        ),
        (
            "scheduler = \"maglev\"\ndeny = [\"198.18.0.0/33\"]\n",
            "services[0].deny[0]: prefix length \"33\" is not a number from 0 to 32",
        ),
        (
            "scheduler = \"maglev\"\ndeny = [\"ten.0.0.0/8\"]\n",
            "services[0].deny[0]: \"ten.0.0.0\" is not an IP address",
        ),
    ] {
        let e = errors_of(svc, line);
        assert!(e.len() == 1 && e[0].starts_with(error), "{line}: {e:?}");
    }
    for (line, error) in [
        (
            "port = 8080\nlower_threshold = 5\n",
            "services[0].backends[0].lower_threshold: needs an upper_threshold",
        ),
        (
            "port = 8080\nupper_threshold = 4\nlower_threshold = 5\n",
            "services[0].backends[0].lower_threshold: 5 is above the upper_threshold 4",
        ),
        (
            "port = 8080\nupper_threshold = 2147483648\n",
            "services[0].backends[0].upper_threshold: 2147483648 is not from 0 to 2147483647",
        ),
    ] {
        let e = errors_of("port = 8080\n", line);
        assert!(e.len() == 1 && e[0].starts_with(error), "{line}: {e:?}");
    }
}

#[test]
fn tunnels_are_checked_and_tun_backends_may_be_of_the_other_family() {
    let tun = "forwarding = \"dr\"\n";
    let m = check(&BASE.replacen(
        tun,
        "forwarding = \"tun\"\ntunnel = \"gue\"\ntunnel_port = 6080\n[[services.backends]]\nid = \"v4\"\naddress = \"198.18.0.60\"\n",
        1,
    ))
    .unwrap();
    assert_eq!(m.services[1].tunnel, Tunnel::Gue { port: 6080 });
    assert_eq!(
        m.services[1].backends[0].address,
        "198.18.0.60".parse::<IpAddr>().unwrap(),
        "an IPv4 backend of an IPv6 vip over tun"
    );
    assert_eq!(check(BASE).unwrap().services[1].tunnel, Tunnel::Ipip);
    for (line, error) in [
        (
            "forwarding = \"tun\"\ntunnel = \"vxlan\"\n",
            "services[1].tunnel: \"vxlan\" is not ipip, gue or gre",
        ),
        (
            "forwarding = \"tun\"\ntunnel = \"gue\"\n",
            "services[1].tunnel_port: is required with tunnel = \"gue\"",
        ),
        (
            "forwarding = \"tun\"\ntunnel = \"gre\"\ntunnel_port = 6080\n",
            "services[1].tunnel_port: is for tunnel = \"gue\" only",
        ),
        (
            "forwarding = \"dr\"\ntunnel = \"gre\"\n",
            "services[1].tunnel: gre is for tun forwarding (the forwarding is dr)",
        ),
        (
            "forwarding = \"dr\"\n[[services.backends]]\nid = \"v4\"\naddress = \"198.18.0.60\"\n",
            "services[1].backends[0].address: 198.18.0.60 is IPv4, the service's vip 2001:db8:1::53 is IPv6",
        ),
    ] {
        let e = errors_of(tun, line);
        assert!(e.len() == 1 && e[0].starts_with(error), "{line}: {e:?}");
    }
}

#[test]
fn persistence_and_port_zero_are_checked_field_by_field() {
    let svc = "scheduler = \"maglev\"\n";
    let m = check(&BASE.replacen(
        svc,
        "scheduler = \"rr\"\npersistence_timeout = 600\npersistence_netmask = 24\nexpire_quiescent_template = true\n",
        1,
    ))
    .unwrap();
    assert_eq!(
        m.services[0].persistence,
        Some(Persistence {
            timeout: 600,
            netmask: 24,
            expire_quiescent: true
        })
    );
    let dns6 = "forwarding = \"dr\"\n";
    let m =
        check(&BASE.replacen(dns6, "forwarding = \"dr\"\npersistence_timeout = 60\n", 1)).unwrap();
    assert_eq!(
        m.services[1].persistence.unwrap().netmask,
        128,
        "one IPv6 client"
    );
    assert_eq!(check(BASE).unwrap().services[0].persistence, None);
    let port0 = check(&BASE.replacen(
        "port = 53\nforwarding = \"dr\"\n",
        "port = 0\nforwarding = \"dr\"\npersistence_timeout = 60\n",
        1,
    ))
    .unwrap();
    assert_eq!(
        (
            port0.services[1].port,
            port0.services[1].persistence.unwrap().timeout
        ),
        (0, 60)
    );
    for (from, line, error) in [
        (
            svc,
            "persistence_netmask = 24\n",
            "services[0].persistence_netmask: needs a persistence_timeout",
        ),
        (
            svc,
            "persistence_timeout = 60\npersistence_netmask = 33\n",
            "services[0].persistence_netmask: 33 is not a prefix length from 1 to 32",
        ),
        (
            svc,
            "persistence_timeout = 40000000\n",
            "services[0].persistence_timeout: 40000000 is not from 0 (off) to 31536000 seconds",
        ),
        (
            svc,
            "expire_quiescent_template = true\n",
            "services[0].expire_quiescent_template: needs a persistence_timeout",
        ),
        (
            "port = 53\nforwarding = \"dr\"\n",
            "port = 0\nforwarding = \"dr\"\n",
            "services[1].port: 0 (every port) is for a persistent dr or tun service",
        ),
        (
            "port = 80\n",
            "port = 0\npersistence_timeout = 60\n",
            "services[0].port: 0 (every port) forwards with dr or tun",
        ),
        (
            "port = 53\nforwarding = \"dr\"\n",
            "port = 0\nforwarding = \"dr\"\npersistence_timeout = 60\nhealth_check = { type = \"tcp\" }\n",
            "services[1].health_check.port: is required when the service's port is 0",
        ),
    ] {
        let e = errors_of(from, line);
        assert!(e.iter().any(|x| x.starts_with(error)), "{line}: {e:?}");
    }
}

#[test]
fn sync_and_bgp_are_off_by_default_and_typed_when_set() {
    let m = check(BASE).unwrap();
    assert_eq!((m.sync.as_ref(), m.bgp.as_ref()), (None, None));
    let text = format!(
        "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"198.19.0.2:8848\", \"[2001:db8:9::2]:8848\"]\nsync_id = 7\n\
         [bgp]\nlocal_as = 65001\nneighbors = [{{ address = \"198.18.0.254\", remote_as = 65000 }}]\nhold_time = 3\n{BASE}"
    );
    let m = check(&text).unwrap();
    let s = m.sync.unwrap();
    assert_eq!(s.listen, "198.19.0.1:8848".parse().unwrap());
    assert_eq!(s.peers.len(), 2);
    assert_eq!(
        (
            s.sync_id,
            s.max_records_per_second,
            s.ring_records,
            s.refresh_seconds
        ),
        (7, 1_000_000, 65536, 300)
    );
    let b = m.bgp.unwrap();
    // The router id defaults to the first IPv4 interface address.
    assert_eq!(
        b.router_id,
        "198.18.0.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    assert_eq!((b.local_as, b.hold_time), (65001, 3));
    assert_eq!(b.neighbors[0].remote_as, 65000);
    assert_eq!(b.grace_period, std::time::Duration::from_secs(3));
}

#[test]
fn bad_sync_and_bgp_settings_name_their_field() {
    let cases = [
        (
            "[sync]\npeers = [\"198.19.0.2:8848\"]\n",
            "sync.listen: is required when sync.peers is set",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1\"\npeers = [\"198.19.0.2:8848\"]\n",
            "sync.listen: \"198.19.0.1\" is not an address:port (like 198.19.0.1:8848)",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\n",
            "sync.peers: needs at least one peer address:port when sync.listen is set",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"198.19.0.1:8848\"]\n",
            "sync.peers[0]: 198.19.0.1:8848 is sync.listen itself",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"198.19.0.2:8848\", \"198.19.0.2:8848\"]\n",
            "sync.peers[1]: 198.19.0.2:8848 is listed twice",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"239.1.1.1:8848\"]\n",
            "sync.peers[0]: 239.1.1.1:8848 is not a unicast address with a port",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"198.19.0.2:8848\"]\nsync_id = 256\n",
            "sync.sync_id: 256 is not from 0 to 255",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"198.19.0.2:8848\"]\nring_records = 8\n",
            "sync.ring_records: 8 is not from 64 to 16777216",
        ),
        (
            "[sync]\nlisten = \"198.19.0.1:8848\"\npeers = [\"198.19.0.2:8848\"]\nmax_records_per_second = 0\n",
            "sync.max_records_per_second: must be at least 1",
        ),
        (
            "[bgp]\nneighbors = [{ address = \"198.18.0.254\", remote_as = 65000 }]\n",
            "bgp.local_as: is required when bgp.neighbors is set",
        ),
        (
            "[bgp]\nlocal_as = 65001\n",
            "bgp.neighbors: needs at least one neighbor when bgp.local_as is set",
        ),
        (
            "[bgp]\nlocal_as = 65001\nneighbors = [{ address = \"router\", remote_as = 65000 }]\n",
            "bgp.neighbors[0].address: \"router\" is not an IP address",
        ),
        (
            "[bgp]\nlocal_as = 65001\nneighbors = [{ address = \"198.18.0.254\", remote_as = 0 }]\n",
            "bgp.neighbors[0].remote_as: must be an AS number from 1 to 4294967295",
        ),
        (
            "[bgp]\nlocal_as = 65001\nrouter_id = \"2001:db8::1\"\nneighbors = [{ address = \"198.18.0.254\", remote_as = 65000 }]\n",
            "bgp.router_id: \"2001:db8::1\" is not an IPv4 address",
        ),
        (
            "[bgp]\nlocal_as = 65001\nhold_time = 2\nneighbors = [{ address = \"198.18.0.254\", remote_as = 65000 }]\n",
            "bgp.hold_time: 2 is not from 3 to 65535 seconds",
        ),
        (
            "[bgp]\nlocal_as = 65001\nrun_dir = \"bird\"\nneighbors = [{ address = \"198.18.0.254\", remote_as = 65000 }]\n",
            "bgp.run_dir: \"bird\" is not an absolute path",
        ),
        (
            "[bgp]\nlocal_as = 65001\ngrace_period_ms = 600001\nneighbors = [{ address = \"198.18.0.254\", remote_as = 65000 }]\n",
            "bgp.grace_period_ms: 600001 is more than 600000 (ten minutes)",
        ),
        (
            "[bgp]\nlocal_as = 65001\nneighbor = []\n",
            "bgp: unknown key `neighbor` (expected one of `local_as`",
        ),
    ];
    for (section, want) in cases {
        let errors = check(&format!("{section}{BASE}")).expect_err(section);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{section}: {errors:?} lacks {want:?}"
        );
    }
}
