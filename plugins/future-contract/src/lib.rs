//! `future-contract`: a test plugin that targets `membrane:interceptor@0.3.0`, a contract
//! version this membrane does not implement, to prove that membrane refuses such a plugin with
//! a message that names the version, instead of a linker error.

#[cfg(target_arch = "wasm32")]
mod plugin {
    wit_bindgen::generate!({
        inline: r#"
            package membrane:interceptor@0.3.0;
            interface types {
                record filter { methods: list<string> }
            }
            world interceptor {
                use types.{filter};
                export init: func(config: string) -> result<list<filter>, string>;
            }
        "#,
        world: "interceptor",
    });

    struct Future;

    impl Guest for Future {
        fn init(_config: String) -> Result<Vec<Filter>, String> {
            Ok(Vec::new())
        }
    }

    export!(Future);
}
