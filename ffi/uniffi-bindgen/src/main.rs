//! `cargo run -p uniffi-bindgen -- generate --library <lib> --language <lang> --out-dir <dir>`:
//! uniffi's generator at the version `karmyq-ffi` is built with.

fn main() {
    uniffi::uniffi_bindgen_main()
}
