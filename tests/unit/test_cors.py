"""CORS policies as Spring reads them: origin patterns, path patterns, combining."""

from __future__ import annotations

import pytest

from fastgw.cors import ALL, Compiled, CorsPolicy, check_policy, origin_pattern, path_matcher


@pytest.mark.parametrize(("pattern", "origin", "matches"), [
    ("https://*.example.com", "https://a.example.com", True),
    ("https://*.example.com", "https://a.b.example.com", True),
    ("https://*.example.com", "http://a.example.com", False),
    ("https://*.example.com", "https://example.com.evil", False),
    ("https://*.example.com:[8080,8081]", "https://a.example.com:8081", True),
    ("https://*.example.com:[8080,8081]", "https://a.example.com:9000", False),
    ("https://*.example.com:[8080,8081]", "https://a.example.com", True),
    ("http://localhost:[*]", "http://localhost:3000", True),
    ("*", "null", True),
])
def test_origin_patterns(pattern, origin, matches):
    assert bool(origin_pattern(pattern).fullmatch(origin)) is matches


@pytest.mark.parametrize("pattern", ["https://a.test[80]", "https://a.test:[x]"])
def test_bad_origin_patterns_are_refused(pattern):
    with pytest.raises(ValueError):
        origin_pattern(pattern)


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("/api/**", "/api", True),
    ("/api/**", "/api/a/b", True),
    ("/api/**", "/apix", False),
    ("/api/*", "/api/a", True),
    ("/api/*", "/api/a/b", False),
    ("/red/{segment}", "/red/blue", True),
    ("/red/{segment}", "/red/", False),
])
def test_path_patterns(pattern, path, matches):
    assert bool(path_matcher(pattern)(path)) is matches


def test_every_path_needs_no_matcher():
    assert path_matcher("/**") is None


def test_route_policy_combines_with_the_global_one_as_spring_does():
    global_policy = CorsPolicy(allowed_origins=("https://a.test",), allowed_methods=("GET",),
                               max_age=10)
    route_policy = CorsPolicy(allowed_origins=("https://b.test",), allowed_headers=(ALL,),
                              allow_credentials=True)
    combined = global_policy.combine(route_policy)
    assert combined.allowed_origins == ("https://a.test", "https://b.test")
    assert combined.allowed_methods == ("GET",)
    assert combined.allowed_headers == (ALL,)
    assert (combined.allow_credentials, combined.max_age) == (True, 10)
    assert global_policy.combine(CorsPolicy(allowed_methods=(ALL,))).allowed_methods == (ALL,)


def test_credentials_with_any_origin_is_refused_but_patterns_are_not():
    assert check_policy(CorsPolicy(allowed_origins=(ALL,), allow_credentials=True))
    assert check_policy(CorsPolicy(allowed_origin_patterns=(ALL,), allow_credentials=True)) is None


def test_allowed_origin_answers_star_only_without_credentials():
    assert Compiled(CorsPolicy(allowed_origins=(ALL,))).allowed_origin("https://x.test") == ALL
    echoed = Compiled(CorsPolicy(allowed_origin_patterns=(ALL,), allow_credentials=True))
    assert echoed.allowed_origin("https://x.test") == "https://x.test"
    exact = Compiled(CorsPolicy(allowed_origins=("https://A.test/",)))
    assert exact.allowed_origin("https://a.test") == "https://a.test"
    assert exact.allowed_origin("https://b.test") is None
