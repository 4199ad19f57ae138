use super::*;

#[test]
fn merge_patch_follows_rfc_7396() {
    let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
    merge_patch(
        &mut t,
        &json!({"a": "z", "c": {"f": null}, "list": [3], "new": 1}),
    );
    assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "list": [3], "new": 1}));
    let mut t = json!({"a": 1});
    merge_patch(&mut t, &json!([1]));
    assert_eq!(t, json!([1]), "a non-object patch replaces the whole");
}

#[test]
fn typed_errors_name_the_field() {
    let e = typed::<ServiceSpec>(json!({"id": "a", "port": 80})).unwrap_err();
    assert_eq!((e.status, e.message.as_str()), (422, "vip: is required"));
    let e = typed::<ServiceSpec>(json!({"id": "a", "vip": "x", "port": "80"})).unwrap_err();
    assert_eq!(e.message, "port: invalid type: string \"80\", expected u16");
    let e = typed::<ServiceSpec>(
        json!({"id": "a", "vip": "x", "port": 80, "backends": [{"id": "b", "address": "x", "weigth": 1}]}),
    )
    .unwrap_err();
    assert!(
        e.message
            .starts_with("backends[0].weigth: unknown field (expected one of `id`, `address`"),
        "{}",
        e.message
    );
    let e = typed::<ServiceSpec>(json!([1])).unwrap_err();
    assert_eq!(e.message, "body: a JSON object is expected, not an array");
}
