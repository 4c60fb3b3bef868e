<?php
// Reads sessions with Laravel's own classes (Debian's php-laravel-framework), as a request would:
// the app's session handler (DatabaseSessionHandler, or CacheBasedSessionHandler over RedisStore), Store or
// EncryptedStore with the app key, Store::start(), then SessionGuard logs the user in from the login_web_ key
// through a DatabaseUserProvider over the users table.
//
// Input (stdin, JSON): {"driver": "database"|"redis", "connection": <Laravel database connection config>,
//   "redis": <Laravel redis config: options.prefix and the default connection>, "cache_prefix": <cache.prefix>,
//   "encrypt": bool, "app_key": "base64:...", "lifetime": minutes, "cookie": name, "ids": [session ids]}
// Output (stdout, JSON): one object per id: what Laravel made of it.

require_once '/usr/share/php/Illuminate/autoload.php';
require_once '/usr/share/php/Illuminate/Support/helpers.php';

use Illuminate\Auth\DatabaseUserProvider;
use Illuminate\Auth\SessionGuard;
use Illuminate\Cache\RedisStore;
use Illuminate\Cache\Repository;
use Illuminate\Container\Container;
use Illuminate\Database\Capsule\Manager as Capsule;
use Illuminate\Encryption\Encrypter;
use Illuminate\Hashing\BcryptHasher;
use Illuminate\Redis\RedisManager;
use Illuminate\Session\CacheBasedSessionHandler;
use Illuminate\Session\DatabaseSessionHandler;
use Illuminate\Session\EncryptedStore;
use Illuminate\Session\Store;

$in = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$container = new Container;
$capsule = new Capsule($container);
$capsule->addConnection($in['connection']);
$db = $capsule->getConnection();

if ($in['driver'] === 'database') {
    $handler = new DatabaseSessionHandler($db, 'sessions', $in['lifetime'], $container);
} else {
    $redis = new RedisManager($container, 'phpredis', $in['redis']);
    $handler = new CacheBasedSessionHandler(new Repository(new RedisStore($redis, $in['cache_prefix'], 'default')),
        $in['lifetime']);
}

$out = [];
foreach ($in['ids'] as $id) {
    // A fresh Store per request, as SessionManager builds one.
    $session = $in['encrypt']
        ? new EncryptedStore($in['cookie'], $handler,
            new Encrypter(base64_decode(substr($in['app_key'], 7)), 'AES-256-CBC'))
        : new Store($in['cookie'], $handler);
    $session->setId($id);
    $session->start();
    $guard = new SessionGuard('web', new DatabaseUserProvider($db, new BcryptHasher, 'users'), $session);
    $out[] = [
        'id' => $id,
        'kept_id' => $session->getId() === $id,  // Store::isValidId, else a fresh id: logged out
        'login_key' => $guard->getName(),
        'user_id' => $guard->check() ? $guard->id() : null,
        'token' => $session->token(),
        'attributes' => $session->all(),
    ];
}
echo json_encode($out, JSON_THROW_ON_ERROR), "\n";
