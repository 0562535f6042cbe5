pub mod wasm_host;
