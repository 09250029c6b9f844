//! The scripted test module as a plugin, `libhsu_test_plugin.so`.

hsu_module::export_plugin!(|| hsu_test_module::TestModule::new(Default::default()));
