//! The services in `ipvsadm -S -n` form and back (`l4lbctl save`, `l4lbctl restore`).
//!
//! A service line: `-A -t|-u VIP:PORT -s SCHED [-p TIMEOUT] [-M NETMASK] [-b FLAGS] [-o]`; a
//! backend line: `-a -t|-u VIP:PORT -r ADDR:PORT -m|-g|-i -w WEIGHT [-x UPPER] [-y LOWER]`
//! (`--tun-type`, `--tun-port` after `-i` for gue and gre). IPv6 addresses in brackets; the
//! IPv4 netmask dotted, the IPv6 one a prefix length, as ipvsadm prints them. l4lb's `maglev`
//! (the whole tuple hashed) is printed as IPVS's `mh` with `mh-port`, which hashes the same
//! fields. `--id NAME` (not ipvsadm's) carries l4lb's ids when asked for (`save --ids`); a line
//! without one gets an id made of its protocol, address and port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{Map, Value, json};

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn endpoint(addr: &str, port: u64) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        _ => format!("{addr}:{port}"),
    }
}

/// The rules, and a warning for each setting the form cannot hold.
pub fn save(services: &[Value], with_ids: bool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut warnings = Vec::new();
    for s in services {
        let id = text(&s["id"]);
        let proto = if s["protocol"] == "udp" { "-u" } else { "-t" };
        let vip = endpoint(&text(&s["vip"]), s["port"].as_u64().unwrap_or(0));
        let mut flags: Vec<String> = s["scheduler_flags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let scheduler = match s["scheduler"].as_str().unwrap_or("wlc") {
            "maglev" => {
                flags.retain(|f| f != "mh-port");
                flags.insert(0, "mh-port".into());
                "mh".to_string()
            }
            other => other.to_string(),
        };
        // ipvsadm prints the fallback flag first.
        flags.sort_by_key(|f| !f.ends_with("fallback"));
        let mut line = format!("-A {proto} {vip} -s {scheduler}");
        let timeout = s["persistence_timeout"].as_u64().unwrap_or(0);
        if timeout > 0 {
            line += &format!(" -p {timeout}");
            let v4 = text(&s["vip"]).parse::<Ipv4Addr>().is_ok();
            match s["persistence_netmask"].as_u64() {
                Some(m) if v4 && m < 32 => {
                    let mask = Ipv4Addr::from(u32::MAX << (32 - m));
                    line += &format!(" -M {mask}");
                }
                Some(m) if !v4 && m < 128 => line += &format!(" -M {m}"),
                _ => {}
            }
        }
        if !flags.is_empty() {
            line += &format!(" -b {}", flags.join(","));
        }
        if s["one_packet"] == true {
            line += " -o";
        }
        if with_ids {
            line += &format!(" --id {id}");
        }
        out += &line;
        out.push('\n');
        let mut lost = Vec::new();
        if s["health_check"]["type"]
            .as_str()
            .is_some_and(|t| t != "none")
        {
            lost.push("health_check");
        }
        if !s["sorry_backend"].is_null() {
            lost.push("sorry_backend");
        }
        for key in ["allow", "deny"] {
            if s[key].as_array().is_some_and(|a| !a.is_empty()) {
                lost.push(key);
            }
        }
        if s["maglev_table_size"].as_u64().is_some_and(|m| m != 65537) {
            lost.push("maglev_table_size");
        }
        if s["expire_quiescent_template"] == true {
            lost.push("expire_quiescent_template (a sysctl in IPVS)");
        }
        if !lost.is_empty() {
            warnings.push(format!(
                "service {id}: {} not in ipvsadm's form",
                lost.join(", ")
            ));
        }
        let method = match s["forwarding"].as_str() {
            Some("dr") => "-g",
            Some("tun") => "-i",
            _ => "-m",
        };
        let tunnel = match (s["forwarding"].as_str(), s["tunnel"].as_str()) {
            (Some("tun"), Some(t @ ("gue" | "gre"))) => {
                let port = s["tunnel_port"]
                    .as_u64()
                    .map_or_else(String::new, |p| format!(" --tun-port {p}"));
                format!(" --tun-type {t}{port}")
            }
            _ => String::new(),
        };
        for b in s["backends"].as_array().into_iter().flatten() {
            let enabled = b["enabled"] != false;
            let weight = if enabled {
                b["weight"].as_u64().unwrap_or(1)
            } else {
                warnings.push(format!(
                    "service {id}: backend {} is disabled: saved with weight 0",
                    text(&b["id"])
                ));
                0
            };
            let mut line = format!(
                "-a {proto} {vip} -r {} {method}{tunnel} -w {weight}",
                endpoint(&text(&b["address"]), b["port"].as_u64().unwrap_or(0))
            );
            for (key, opt) in [("upper_threshold", "-x"), ("lower_threshold", "-y")] {
                if let Some(n) = b[key].as_u64().filter(|n| *n > 0) {
                    line += &format!(" {opt} {n}");
                }
            }
            if with_ids {
                line += &format!(" --id {}", text(&b["id"]));
            }
            out += &line;
            out.push('\n');
        }
    }
    (out, warnings)
}

/// An id made of what a line names: `tcp-198.18.0.100-80`, `2001.db8..10-8080`.
fn made_id(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.replace(':', "."))
        .collect::<Vec<_>>()
        .join("-")
}

/// `ADDR:PORT` or `[V6]:PORT`; a backend may leave the port out (the service's).
fn parse_endpoint(s: &str, port_optional: bool) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), Some(a.port())));
    }
    if port_optional {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(a) = bare.parse::<IpAddr>() {
            return Ok((a, None));
        }
    }
    Err(format!("{s:?} is not ADDRESS:PORT ([v6]:port for IPv6)"))
}

/// A netmask as ipvsadm writes it (dotted for IPv4, a length for IPv6) as a prefix length.
fn netmask(s: &str) -> Result<u8, String> {
    if let Ok(m) = s.parse::<Ipv4Addr>() {
        let bits = u32::from(m);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(format!("{s} is not a netmask (ones, then zeros)"));
        }
        return Ok(bits.leading_ones() as u8);
    }
    s.parse::<u8>()
        .map_err(|_| format!("{s:?} is not a netmask (255.255.255.0, or a prefix length)"))
}

/// The services the rules describe, in the API's JSON, in the order of their `-A` lines.
/// Any line that is not `-A` or `-a` of this form is an error naming its line number.
pub fn restore(text: &str) -> Result<Vec<Value>, String> {
    let mut services: Vec<Map<String, Value>> = Vec::new();
    // (the service's protocol and endpoint, its index)
    let mut by_endpoint: Vec<((String, IpAddr, u16), usize)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let kind = words[0];
        if !matches!(kind, "-A" | "--add-service" | "-a" | "--add-server") {
            return Err(at(format!(
                "{kind:?}: only -A (a service) and -a (a backend) lines are read, as ipvsadm -S writes them"
            )));
        }
        let mut proto = None;
        let mut vip = None;
        let mut opts: Map<String, Value> = Map::new();
        let mut real = None;
        let mut method = None;
        let mut id = None;
        let mut j = 1;
        while j < words.len() {
            let w = words[j];
            let value = || {
                words
                    .get(j + 1)
                    .copied()
                    .ok_or_else(|| at(format!("{w} needs a value")))
            };
            let mut step = 2;
            match w {
                "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                    let (a, p) =
                        parse_endpoint(value()?, false).map_err(|e| at(format!("{w}: {e}")))?;
                    proto = Some(if matches!(w, "-t" | "--tcp-service") {
                        "tcp"
                    } else {
                        "udp"
                    });
                    vip = Some((a, p.unwrap_or(0)));
                }
                "-s" | "--scheduler" => {
                    opts.insert("scheduler".into(), json!(value()?));
                }
                "-p" | "--persistent" => {
                    // The timeout is optional (300 s, as ipvsadm).
                    let t = words.get(j + 1).and_then(|v| v.parse::<u32>().ok());
                    if t.is_none() {
                        step = 1;
                    }
                    opts.insert("persistence_timeout".into(), json!(t.unwrap_or(300)));
                }
                "-M" | "--netmask" => {
                    let m = netmask(value()?).map_err(|e| at(format!("{w}: {e}")))?;
                    opts.insert("persistence_netmask".into(), json!(m));
                }
                "-b" | "--sched-flags" => {
                    let flags: Vec<&str> = value()?.split(',').collect();
                    opts.insert("scheduler_flags".into(), json!(flags));
                }
                "-o" | "--ops" => {
                    step = 1;
                    opts.insert("one_packet".into(), json!(true));
                }
                "-r" | "--real-server" => {
                    real =
                        Some(parse_endpoint(value()?, true).map_err(|e| at(format!("{w}: {e}")))?);
                }
                "-m" | "--masquerading" | "-g" | "--gatewaying" | "-i" | "--ipip" => {
                    step = 1;
                    method = Some(match w {
                        "-m" | "--masquerading" => "nat",
                        "-g" | "--gatewaying" => "dr",
                        _ => "tun",
                    });
                }
                "-w" | "--weight" | "-x" | "--u-threshold" | "-y" | "--l-threshold"
                | "--tun-port" => {
                    let v = value()?;
                    let n: u32 = v
                        .parse()
                        .map_err(|_| at(format!("{w}: {v:?} is not a number")))?;
                    let key = match w {
                        "-w" | "--weight" => "weight",
                        "-x" | "--u-threshold" => "upper_threshold",
                        "-y" | "--l-threshold" => "lower_threshold",
                        _ => "tunnel_port",
                    };
                    opts.insert(key.into(), json!(n));
                }
                "--tun-type" => {
                    opts.insert("tunnel".into(), json!(value()?));
                }
                "--id" => id = Some(value()?.to_string()),
                other => {
                    return Err(at(format!(
                        "{other:?}: not an option of ipvsadm's saved form that l4lb takes"
                    )));
                }
            }
            j += step;
        }
        let (Some(proto), Some((vaddr, vport))) = (proto, vip) else {
            return Err(at("names no service (-t VIP:PORT or -u VIP:PORT)".into()));
        };
        let key = (proto.to_string(), vaddr, vport);
        let found = by_endpoint.iter().find(|(k, _)| *k == key).map(|x| x.1);
        if kind.starts_with("-A") || kind == "--add-service" {
            if found.is_some() {
                return Err(at(format!("{proto} {vaddr} port {vport} is added twice")));
            }
            let mut s = Map::new();
            let vip_text = vaddr.to_string();
            s.insert(
                "id".into(),
                json!(id.unwrap_or_else(|| made_id(&[proto, &vip_text, &vport.to_string()]))),
            );
            s.insert("protocol".into(), json!(proto));
            s.insert("vip".into(), json!(vip_text));
            s.insert("port".into(), json!(vport));
            // IPVS's mh with mh-port hashes what l4lb's maglev does: keep the IPVS name.
            s.insert("scheduler".into(), json!("wlc"));
            for (k, v) in opts {
                if matches!(k.as_str(), "weight" | "upper_threshold" | "lower_threshold") {
                    return Err(at(format!("{k} is an option of a backend (-a) line")));
                }
                s.insert(k, v);
            }
            s.insert("backends".into(), json!([]));
            by_endpoint.push((key, services.len()));
            services.push(s);
        } else {
            let Some(si) = found else {
                return Err(at(format!(
                    "{proto} {vaddr} port {vport} has no -A line before it"
                )));
            };
            let Some((raddr, rport)) = real else {
                return Err(at("a backend line needs -r ADDRESS[:PORT]".into()));
            };
            let s = &mut services[si];
            // IPVS's default method is -g (gatewaying).
            let method = method.unwrap_or("dr");
            let n_backends = s["backends"].as_array().map_or(0, Vec::len);
            match s.get("forwarding").and_then(Value::as_str) {
                Some(f) if f != method => {
                    return Err(at(format!(
                        "{method} differs from the service's other backends ({f}): l4lb forwards every backend of a service one way"
                    )));
                }
                _ => {
                    s.insert("forwarding".into(), json!(method));
                }
            }
            let mut b = Map::new();
            let addr_text = raddr.to_string();
            let port = rport.unwrap_or(vport);
            b.insert(
                "id".into(),
                json!(id.unwrap_or_else(|| made_id(&[&addr_text, &port.to_string()]))),
            );
            b.insert("address".into(), json!(addr_text));
            b.insert("port".into(), json!(port));
            for (k, v) in opts {
                match k.as_str() {
                    "weight" | "upper_threshold" | "lower_threshold" => {
                        b.insert(k, v);
                    }
                    "tunnel" | "tunnel_port" => {
                        if n_backends > 0 && s.get(&k) != Some(&v) {
                            return Err(at(format!(
                                "{k} differs from the service's other backends"
                            )));
                        }
                        s.insert(k, v);
                    }
                    other => {
                        return Err(at(format!("{other} is an option of a service (-A) line")));
                    }
                }
            }
            s["backends"]
                .as_array_mut()
                .expect("an array")
                .push(Value::Object(b));
        }
    }
    Ok(services.into_iter().map(Value::Object).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "\
-A -t 198.18.0.100:80 -s wlc
-a -t 198.18.0.100:80 -r 198.18.1.10:8080 -m -w 1
-a -t 198.18.0.100:80 -r 198.18.1.11:8080 -m -w 3 -x 100 -y 50
-A -u [2001:db8::53]:53 -s sh -p 600 -M 64 -b sh-fallback,sh-port
-a -u [2001:db8::53]:53 -r [2001:db8:1::10]:53 -g -w 1
-A -t 198.18.0.101:0 -s rr -p 300 -M 255.255.255.0
-a -t 198.18.0.101:0 -r 198.18.1.12:0 -i --tun-type gue --tun-port 6080 -w 2
-A -u 198.18.0.102:514 -s rr -o
";

    #[test]
    fn the_saved_form_reads_back_and_prints_the_same() {
        let services = restore(RULES).unwrap();
        assert_eq!(services.len(), 4);
        let web = &services[0];
        assert_eq!(web["id"], "tcp-198.18.0.100-80");
        assert_eq!(web["forwarding"], "nat");
        assert_eq!(web["backends"][1]["upper_threshold"], 100);
        assert_eq!(web["backends"][1]["id"], "198.18.1.11-8080");
        let dns = &services[1];
        assert_eq!(dns["id"], "udp-2001.db8..53-53");
        assert_eq!(dns["persistence_netmask"], 64);
        assert_eq!(dns["scheduler_flags"], json!(["sh-fallback", "sh-port"]));
        assert_eq!(dns["forwarding"], "dr");
        let zero = &services[2];
        assert_eq!(
            (zero["port"].clone(), zero["persistence_netmask"].clone()),
            (json!(0), json!(24))
        );
        assert_eq!(
            (zero["tunnel"].clone(), zero["tunnel_port"].clone()),
            (json!("gue"), json!(6080))
        );
        assert_eq!(services[3]["one_packet"], true);
        // What the API would answer for them, printed back.
        let (text, warnings) = save(&services, false);
        assert_eq!(text, RULES);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn maglev_is_saved_as_mh_with_mh_port_and_ids_on_request() {
        let s = json!([{"id": "web", "protocol": "tcp", "vip": "198.18.0.100", "port": 80,
            "scheduler": "maglev", "forwarding": "nat", "health_check": {"type": "tcp"},
            "backends": [{"id": "b1", "address": "198.18.1.10", "port": 8080, "weight": 1,
                          "enabled": false}]}]);
        let (text, warnings) = save(s.as_array().unwrap(), true);
        assert_eq!(
            text,
            "-A -t 198.18.0.100:80 -s mh -b mh-port --id web\n-a -t 198.18.0.100:80 -r 198.18.1.10:8080 -m -w 0 --id b1\n"
        );
        assert_eq!(
            warnings,
            [
                "service web: health_check not in ipvsadm's form",
                "service web: backend b1 is disabled: saved with weight 0"
            ]
        );
        let back = restore(&text).unwrap();
        assert_eq!(
            (back[0]["id"].clone(), back[0]["backends"][0]["id"].clone()),
            (json!("web"), json!("b1"))
        );
    }

    #[test]
    fn what_the_form_cannot_say_is_refused_by_line() {
        for (rules, error) in [
            ("-E -t 198.18.0.1:80 -s rr\n", "line 1: \"-E\": only -A"),
            ("-A -f 1 -s rr\n", "line 1: \"-f\": not an option"),
            (
                "-a -t 198.18.0.1:80 -r 198.18.1.1 -m\n",
                "line 1: tcp 198.18.0.1 port 80 has no -A line before it",
            ),
            (
                "-A -t 198.18.0.1:80\n-a -t 198.18.0.1:80 -r 198.18.1.1 -m\n-a -t 198.18.0.1:80 -r 198.18.1.2 -g\n",
                "line 3: dr differs from the service's other backends (nat)",
            ),
            (
                "-A -t 198.18.0.1:80\n\n-A -t 198.18.0.1:80\n",
                "line 3: tcp 198.18.0.1 port 80 is added twice",
            ),
            (
                "-A -t 198.18.0.1:80 -w 3\n",
                "line 1: weight is an option of a backend",
            ),
            (
                "-A -t 198.18.0.1:80 -M 255.0.255.0 -p\n",
                "line 1: -M: 255.0.255.0 is not a netmask",
            ),
            (
                "-A -t 198.18.0.1 -s rr\n",
                "line 1: -t: \"198.18.0.1\" is not ADDRESS:PORT",
            ),
        ] {
            let e = restore(rules).unwrap_err();
            assert!(e.starts_with(error), "{rules}: {e}");
        }
    }
}
