<?php

namespace TokenMigration\Laravel;

use AsyncAws\Core\Configuration;
use AsyncAws\Core\Credentials\CacheProvider;
use AsyncAws\Core\Credentials\ChainProvider;
use AsyncAws\Core\Credentials\CredentialProvider;
use AsyncAws\Core\Credentials\Credentials;
use AsyncAws\Core\Request;
use AsyncAws\Core\RequestContext;
use AsyncAws\Core\Signer\SignerV4;
use AsyncAws\Core\Stream\StringStream;
use Symfony\Component\HttpClient\HttpClient;
use Symfony\Contracts\HttpClient\HttpClientInterface;

/**
 * POST {endpoint}/auth/migration/bridge, signed with SigV4 (service execute-api) by AsyncAws Core's signer
 * with the app's own AWS credentials: API Gateway's IAM authorizer is the only thing that lets the call in,
 * so the app holds no shared secret.
 */
class BridgeClient
{
    public const ROUTE = '/auth/migration/bridge';

    private HttpClientInterface $http;
    private CredentialProvider $credentials;

    public function __construct(
        private string $endpoint,
        private string $region,
        private float $timeout,
        ?CredentialProvider $credentials = null,
        ?HttpClientInterface $http = null,
    ) {
        $this->http = $http ?? HttpClient::create();
        // The default chain finds the role on AWS; the cache keeps it for the worker's life (until expiry),
        // so an instance-metadata lookup does not happen per request.
        $this->credentials = $credentials ?? new CacheProvider(ChainProvider::createDefaultChain($this->http));
    }

    /** @param array{key?: ?string, secret?: ?string, token?: ?string} $static */
    public static function staticCredentials(array $static): ?CredentialProvider
    {
        if (empty($static['key']) || empty($static['secret'])) {
            return null;
        }

        return new class(new Credentials($static['key'], $static['secret'], $static['token'] ?? null)) implements CredentialProvider {
            public function __construct(private Credentials $credentials)
            {
            }

            public function getCredentials(Configuration $configuration): ?Credentials
            {
                return $this->credentials;
            }
        };
    }

    public function bridge(string $sessionCookie, ?string $clientIp): BridgeResult
    {
        $body = ['session_cookie' => $sessionCookie];
        if ($clientIp !== null && $clientIp !== '') {
            $body['client_ip'] = $clientIp;
        }

        try {
            $request = $this->signedRequest(json_encode($body, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR));
            if ($request === null) {
                return BridgeResult::unavailable('no AWS credentials found to sign the bridge call');
            }

            $response = $this->http->request('POST', $request->getEndpoint(), [
                'headers' => $request->getHeaders(),
                'body' => $request->getBody()->stringify(),
                // timeout bounds each wait for bytes, max_duration the whole exchange.
                'timeout' => $this->timeout,
                'max_duration' => $this->timeout,
            ]);
            $status = $response->getStatusCode();
            $headers = $response->getHeaders(false);
            $document = json_decode($response->getContent(false), true);
        } catch (\Throwable $error) {
            return BridgeResult::unavailable(get_class($error) . ': ' . $error->getMessage());
        }

        return self::interpret($status, is_array($document) ? $document : null, $headers);
    }

    /**
     * The bridge call for this JSON body, signed (null without credentials). Separate from sending so the
     * signature can be checked against a verifier on its own.
     */
    public function signedRequest(string $json, ?\DateTimeImmutable $now = null): ?Request
    {
        $credentials = $this->credentials->getCredentials(Configuration::create(['region' => $this->region]));
        if ($credentials === null) {
            return null;
        }
        $request = new Request('POST', '', [], [
            'content-type' => 'application/json',
            'accept' => 'application/json',
        ], StringStream::create($json));
        $request->setEndpoint(rtrim($this->endpoint, '/') . self::ROUTE);
        (new SignerV4('execute-api', $this->region))->sign($request, $credentials, new RequestContext(
            $now ? ['currentDate' => $now] : []
        ));

        return $request;
    }

    /** @param array<string, list<string>> $headers */
    public static function interpret(int $status, ?array $document, array $headers = []): BridgeResult
    {
        if ($status === 200 && $document !== null
            && is_string($document['session_id'] ?? null) && is_int($document['user_id'] ?? null)) {
            return BridgeResult::bridged($document['session_id'], $document['user_id']);
        }
        $error = $document['error'] ?? null;
        if ($status === 401 && $error === 'invalid_grant') {
            return BridgeResult::refused();
        }
        if ($status === 403 && $error === 'bridge_off') {
            return BridgeResult::off(sprintf('auth_mode=%s exchange_enabled=%s',
                $document['auth_mode'] ?? '?', var_export($document['exchange_enabled'] ?? null, true)));
        }
        if ($status === 429) {
            $retry = (int) (($headers['retry-after'][0] ?? null) ?: 60);

            return BridgeResult::throttled(max(1, $retry));
        }
        // A 403 without bridge_off is API Gateway refusing our signature: a configuration error, not a
        // refusal of this user, so it must not be remembered against the cookie.
        $message = is_array($document) ? (string) ($document['message'] ?? $error ?? '') : '';

        return BridgeResult::unavailable("HTTP {$status} {$message}");
    }
}
