<?php

// Prints, as JSON, the bridge call BridgeClient would send: {method, url, headers, body}. Arguments (JSON on
// stdin): endpoint, region, key, secret, token?, body, now? (ISO 8601). Lets Python check the signature with
// the twin's verifier, and AsyncAws's signer against AWS's published SigV4 vectors ("vector" mode).
require_once '/usr/share/php/AsyncAws/Core/autoload.php';
$package = getenv('TOKENMIGRATION_BRIDGE_PACKAGE') ?: dirname(__DIR__, 2) . '/integrations/laravel';
spl_autoload_register(function (string $class) use ($package) {
    $prefix = 'TokenMigration\\Laravel\\';
    if (strncmp($class, $prefix, strlen($prefix)) === 0) {
        require $package . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    }
});

use AsyncAws\Core\Credentials\Credentials;
use AsyncAws\Core\Request;
use AsyncAws\Core\RequestContext;
use AsyncAws\Core\Signer\SignerV4;
use AsyncAws\Core\Stream\StringStream;
use TokenMigration\Laravel\BridgeClient;

$in = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$now = isset($in['now']) ? new DateTimeImmutable($in['now']) : null;

if (($in['mode'] ?? 'bridge') === 'vector') {
    // One request of AWS's SigV4 test suite, signed by the same SignerV4 the bridge uses.
    $request = new Request($in['method'], '', [], $in['headers'], StringStream::create($in['body']));
    $request->setEndpoint($in['url']);
    (new SignerV4($in['service'], $in['region']))->sign($request, new Credentials($in['key'], $in['secret']),
        new RequestContext(['currentDate' => $now]));
} else {
    $client = new BridgeClient($in['endpoint'], $in['region'], 2.0, BridgeClient::staticCredentials(
        ['key' => $in['key'], 'secret' => $in['secret'], 'token' => $in['token'] ?? null]));
    $request = $client->signedRequest($in['body'], $now);
}

echo json_encode([
    'method' => $request->getMethod(),
    'url' => $request->getEndpoint(),
    'headers' => $request->getHeaders(),
    'body' => $request->getBody()->stringify(),
], JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
