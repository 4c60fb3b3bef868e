<?php

// tokenmigration's Laravel bridge. Publish with
//   php artisan vendor:publish --provider="TokenMigration\Laravel\BridgeServiceProvider"
// Every value has an environment variable, so a deployment changes none of this file.

return [
    'bridge' => [
        // Switch the middleware off without a deploy (it then does nothing at all).
        'enabled' => env('TOKENMIGRATION_BRIDGE_ENABLED', true),

        // The API's base URL including the stage, without a trailing slash, e.g.
        // https://abc123.execute-api.eu-west-1.amazonaws.com/prod (the bridge POSTs to
        // {endpoint}/auth/migration/bridge). Unset: the middleware does nothing.
        'endpoint' => env('TOKENMIGRATION_API_URL'),

        // The region the API lives in (the SigV4 scope).
        'region' => env('TOKENMIGRATION_API_REGION', env('AWS_DEFAULT_REGION', 'us-east-1')),

        // The app's own AWS credentials sign every call (SigV4, service execute-api). Leave these unset on
        // AWS: AsyncAws's default chain then finds the role (environment, web identity, ~/.aws, ECS, EC2).
        'credentials' => [
            'key' => env('TOKENMIGRATION_AWS_ACCESS_KEY_ID'),
            'secret' => env('TOKENMIGRATION_AWS_SECRET_ACCESS_KEY'),
            'token' => env('TOKENMIGRATION_AWS_SESSION_TOKEN'),
        ],

        // The legacy Express app's session cookie, read from the raw Cookie header exactly as the browser
        // sent it (EncryptCookies never sees it decrypted, so it needs no $except entry).
        'express_cookie' => env('TOKENMIGRATION_EXPRESS_COOKIE', 'connect.sid'),

        // The guard the migrated sessions log into (the bridge route writes login_web_...).
        'guard' => env('TOKENMIGRATION_GUARD', 'web'),

        // Seconds the whole call may take (connect + response). A slower or unreachable API: guest request.
        'timeout' => (float) env('TOKENMIGRATION_BRIDGE_TIMEOUT', 2.0),

        // After 403 bridge_off (exchange switched off, or token-only mode), do not call for this long.
        'off_seconds' => (int) env('TOKENMIGRATION_BRIDGE_OFF_SECONDS', 60),

        // After 401 for a cookie, do not call again for that cookie (kept by its SHA-256) for this long.
        'refused_seconds' => (int) env('TOKENMIGRATION_BRIDGE_REFUSED_SECONDS', 600),

        // Cache store for those two memories (null: the app's default store). Use a shared store (redis,
        // database, memcached) when the app runs on several servers.
        'cache_store' => env('TOKENMIGRATION_CACHE_STORE'),
    ],
];
