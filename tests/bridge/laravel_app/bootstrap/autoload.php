<?php

// Debian's php-laravel-framework and php-async-aws-core instead of vendor/: their own autoloaders. The
// bridge package is loaded from its composer.json's PSR-4 map, as Composer would load it.
require_once '/usr/share/php/Illuminate/autoload.php';
require_once '/usr/share/php/AsyncAws/Core/autoload.php';
require_once '/usr/share/php/Illuminate/Foundation/helpers.php';
require_once '/usr/share/php/Illuminate/Support/helpers.php';

$packages = [
    dirname(__DIR__) => ['App\\' => 'app/'],
];
$bridge = getenv('TOKENMIGRATION_BRIDGE_PACKAGE') ?: dirname(__DIR__, 4) . '/integrations/laravel';
$composer = json_decode(file_get_contents($bridge . '/composer.json'), true, 512, JSON_THROW_ON_ERROR);
$packages[$bridge] = $composer['autoload']['psr-4'];

spl_autoload_register(function (string $class) use ($packages) {
    foreach ($packages as $root => $map) {
        foreach ($map as $prefix => $dir) {
            if (strncmp($class, $prefix, strlen($prefix)) === 0) {
                $file = $root . '/' . $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
                if (is_file($file)) {
                    require $file;

                    return;
                }
            }
        }
    }
});
