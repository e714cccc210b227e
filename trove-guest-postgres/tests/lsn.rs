//! PostgreSQL LSNs parse, print and compare as 64-bit numbers, never as text.

use proptest::prelude::*;
use trove_guest_core::Lsn;

fn text(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

proptest! {
    #[test]
    fn lsn_text_round_trips(v in any::<u64>()) {
        let lsn: Lsn = text(v).parse().unwrap();
        prop_assert_eq!(lsn, Lsn(v));
        prop_assert_eq!(lsn.to_string(), text(v));
    }

    #[test]
    fn lsn_order_is_the_numeric_order(a in any::<u64>(), b in any::<u64>()) {
        let (la, lb): (Lsn, Lsn) = (text(a).parse().unwrap(), text(b).parse().unwrap());
        prop_assert_eq!(la.cmp(&lb), a.cmp(&b));
    }

    #[test]
    fn lsns_compare_numerically_across_the_32_bit_boundary(
        hi in 0u64..0x100,
        lo in 0xFFFF_F000u64..=0xFFFF_FFFF,
        step in 1u64..0x2000,
    ) {
        let a = (hi << 32) | lo;
        let b = a + step;
        let (ta, tb) = (text(a), text(b));
        let (la, lb): (Lsn, Lsn) = (ta.parse().unwrap(), tb.parse().unwrap());
        prop_assert!(la < lb, "{} < {}", ta, tb);
    }

    #[test]
    fn lower_case_and_zero_padded_forms_are_the_same_lsn(v in any::<u64>()) {
        let padded = format!("{:08x}/{:08x}", v >> 32, v & 0xFFFF_FFFF);
        prop_assert_eq!(padded.parse::<Lsn>().unwrap(), Lsn(v));
    }

    #[test]
    fn text_that_is_not_hi_slash_lo_is_rejected(s in "[^/]{0,20}") {
        prop_assert!(s.parse::<Lsn>().is_err());
    }
}

#[test]
fn known_values_parse() {
    let a: Lsn = "16/B374D848".parse().unwrap();
    assert_eq!(a, Lsn(0x16_B374_D848));
    // Text order says otherwise: "9/0" sorts after "10/0" as a string.
    assert!("0/FFFFFFFF" < "1/0" && "9/0" > "10/0");
    assert!("0/FFFFFFFF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
    assert!("9/0".parse::<Lsn>().unwrap() < "10/0".parse::<Lsn>().unwrap());
    for bad in [
        "",
        "16/",
        "/1",
        "G/1",
        "123456789/0",
        "1/2/3",
        "1 /2",
        "-1/0",
    ] {
        assert!(bad.parse::<Lsn>().is_err(), "{bad:?} accepted");
    }
}
