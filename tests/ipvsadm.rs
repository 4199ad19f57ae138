//! `l4lbctl restore` and `l4lbctl save` in a namespace lab: a service restored from an
//! `ipvsadm -S -n` text is live at once (kernel TCP through it splits as its weights say), and
//! `l4lbctl save` prints the same rules back.

mod common;

use common::lab::{assert_all_ok, binary, http, start, vip4};
use harness::lab::{self, Mode};

#[test]
fn rules_restored_from_ipvsadm_text_are_saved_back_the_same_and_carry_traffic() {
    let lab = start("ipvsadm", Mode::Nat, &[]);
    let rules = format!(
        "-A -t {vip}:80 -s wrr\n\
         -a -t {vip}:80 -r {b1}:8080 -m -w 1\n\
         -a -t {vip}:80 -r {b2}:8080 -m -w 1 -x 1000 -y 500\n\
         -a -t {vip}:80 -r {b3}:8080 -m -w 2\n",
        vip = lab::VIP4,
        b1 = lab::backend4(0),
        b2 = lab::backend4(1),
        b3 = lab::backend4(2),
    );
    let file = lab.dir().join("rules");
    std::fs::write(&file, &rules).unwrap();
    let ctl = binary("l4lbctl");
    let out = lab
        .in_lb(&ctl, &["restore", file.to_str().unwrap()])
        .expect("l4lbctl restore");
    assert_eq!(out, "1 services restored\n");
    let saved = lab.in_lb(&ctl, &["save"]).expect("l4lbctl save");
    assert_eq!(saved, rules, "save prints what was restored");
    // wrr 1:1:2 is exact over every four connections.
    let (per, failed) = http(&lab, vip4(80), 40, 21000);
    assert_all_ok(&failed, &lab);
    assert_eq!(
        per.into_iter().collect::<Vec<_>>(),
        [
            ("b1".to_string(), 10),
            ("b2".to_string(), 10),
            ("b3".to_string(), 20)
        ]
    );
    // A wrong text changes nothing and names its line; so does one the API refuses.
    for (text, error) in [
        (
            format!(
                "-A -t {}:80 -s rr\n-a -t {}:80 -r {}:8080 -m -w x\n",
                lab::VIP4,
                lab::VIP4,
                lab::backend4(0)
            ),
            "rules: line 2: -w: \"x\" is not a number",
        ),
        (
            format!("-A -t {}:80 -s fastest\n", lab::VIP4),
            "422 Unprocessable Entity: [0].scheduler: \"fastest\" is not one of rr, wrr",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let e = lab
            .in_lb(&ctl, &["restore", file.to_str().unwrap()])
            .unwrap_err();
        assert!(e.contains(error), "{e}");
    }
    let again = lab.in_lb(&ctl, &["save"]).expect("l4lbctl save");
    assert_eq!(again, rules, "nothing changed");
}
