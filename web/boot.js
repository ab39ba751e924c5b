// Loads the app: the wasm module and its JavaScript glue, both built by scripts/build-web.sh.
import init from "/nightjar_web.js";
init({ module_or_path: "/nightjar_web_bg.wasm" });
